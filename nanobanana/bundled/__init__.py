"""The bundled shapes model: its procedural world, builder and training."""
