"""The fleet side: what an operator runs against the devices of a fleet over MQTT (`lensops fleet ...`).

- `notice`: the retained fleet deployment notice `promote` publishes.
- `mqtt`: one short-lived MQTT client from an `mqtt://` / `mqtts://` URL (publish retained, read retained).
"""
