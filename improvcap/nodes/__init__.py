"""Capture nodes: improvcap on another PC of a rig, driven by a controller over the authenticated link.

`advert` publishes a node on LSL (its name, port, addresses and key id) and finds one from the
controller, whose inlet on it also measures the node's clock (liblsl's time_correction); `server` is the
node's side (`improvcap node`), `client` the controller's (`improvcap nodes RIG`).
"""
