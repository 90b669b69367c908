"""The link between a controller and its capture nodes: the rig's shared key and the authenticated channel
every control message travels on (improvcap.link.keys, improvcap.link.channel)."""
