"""The INTR Explorer dock (dock.py) and its boxes: model, image, predictions, attention, batch;
demo.py opens napari with it and drives it from code (`intr demo`)."""
