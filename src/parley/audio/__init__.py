"""Audio handling that does not depend on any model: format detection, (later) decoding."""
