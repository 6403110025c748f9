"""cvapps and the systems around it: labelling tools (Label Studio, CVAT)."""
