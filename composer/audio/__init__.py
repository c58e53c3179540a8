"""Notes to what people hear and see: rendered audio and piano-roll pictures."""
