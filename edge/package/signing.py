"""Detached Ed25519 signature over `manifest.json` (the manifest pins every file by sha256)."""

from __future__ import annotations

import base64
from pathlib import Path

from edge.package.manifest import MANIFEST, SIGNATURE, PackageError


def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair as PEM files (the private one readable by its owner only)."""
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private_path, public_path = Path(private_path), Path(public_path)
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _load(path: Path, private: bool):
    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PackageError(f"{path}: cannot read key file ({exc.strerror})") from None
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise PackageError(f"{path}: not a PEM {'private' if private else 'public'} key ({exc})") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise PackageError(f"{path}: not an Ed25519 key")
    return key


def sign_manifest(package_dir: Path, private_key: Path) -> Path:
    key = _load(private_key, private=True)
    signature = key.sign((Path(package_dir) / MANIFEST).read_bytes())
    out = Path(package_dir) / SIGNATURE
    out.write_text(base64.b64encode(signature).decode() + "\n")
    return out


def verify_signature(package_dir: Path, public_key: Path) -> None:
    from cryptography.exceptions import InvalidSignature

    key = _load(public_key, private=False)
    sig_path = Path(package_dir) / SIGNATURE
    if not sig_path.is_file():
        raise PackageError(f"{sig_path}: package is unsigned but a public key is configured")
    try:
        signature = base64.b64decode(sig_path.read_text().strip(), validate=True)
        key.verify(signature, (Path(package_dir) / MANIFEST).read_bytes())
    except (InvalidSignature, ValueError):
        raise PackageError(f"{sig_path}: signature does not match {MANIFEST} for key {public_key}") from None
