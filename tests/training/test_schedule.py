from training.schedule import EarlyStopping, lr_at


def test_warmup_then_cosine():
    lrs = [lr_at(s, 100, 0.1, 10) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] <= 0.1, "warm-up rises linearly"
    assert abs(lrs[10] - 0.1) < 1e-3, "peak right after warm-up"
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "cosine decays monotonically"
    assert lrs[-1] < 0.01


def test_early_stopping_counts_bad_epochs():
    stop = EarlyStopping(patience=2)
    for epoch, value in enumerate([0.5, 0.6, 0.59, 0.58]):
        stop.update(epoch, value)
    assert stop.should_stop and stop.best_epoch == 1
    assert EarlyStopping.from_dict(stop.to_dict()).best == 0.6, "state survives a checkpoint round trip"
