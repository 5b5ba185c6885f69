"""Parley as a XiaoZhi server: the devices' protocol, OTA and activation, a session per device socket."""
