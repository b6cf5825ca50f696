"""Triage of anomaly candidates in the QGIS desktop.

:mod:`.review` holds the logic without widgets (candidates in rank order, the
``review`` field written to the data source, the CSV export); :mod:`.dock` is the
dock widget and the action that shows it.
"""
