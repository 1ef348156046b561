"""Part calibration: good images of a new part -> a versioned, deployable part bundle (`edge_ad calibrate`)."""
