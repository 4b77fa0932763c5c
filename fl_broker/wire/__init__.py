"""What travels on the wire: the msgpack codec, the envelope, Shareable/DXO and the broker names."""
