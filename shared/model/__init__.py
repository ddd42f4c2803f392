"""The model: events and their encoding, the image aggregate folded from them, the
projection, the tag and release-age rules, the pipeline's declaration. Pure where it can be."""
