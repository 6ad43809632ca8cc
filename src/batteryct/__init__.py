"""batteryct: operando X-ray CT of lithium-metal cells to segmented Li phases and their dynamics."""

__version__ = "0.1.0"
