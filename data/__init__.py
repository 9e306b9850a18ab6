"""The data files the course ships; installed as ``adaedu._data``. Read them with ``adaedu.data``."""
