"""The INTR Explorer dock (dock.py) and its boxes: model, image, predictions, attention, batch."""
