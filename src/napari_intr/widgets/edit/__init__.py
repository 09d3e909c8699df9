"""The INTR Edit dock (dock.py): paint a region, edit it, see the prediction shift; its options and report."""
