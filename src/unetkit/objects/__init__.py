"""Objects (instances): targets for separating touching objects, post-processing, measurements,
object-level metrics and object file formats."""
