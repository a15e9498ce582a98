"""What leaves the engine: infotext (A1111's parameter text), image files and their names."""
