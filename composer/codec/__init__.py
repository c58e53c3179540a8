"""MIDI files and notated scores <-> notes <-> Performance RNN event tokens."""
