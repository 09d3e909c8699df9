"""The INTR Fine-tune dock (dock.py): collection, settings, the training plot and the run's results."""
