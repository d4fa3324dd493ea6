"""crust in the BitTorrent Mainline DHT (BEP 44 endpoint records); optional: ``crust[dht]``."""
