"""Texts -> sentence windows -> entities with offsets: the one path the Python API
(`biogner.load`), the extraction job, the MLflow pyfunc and the endpoint share. No Ray, no
MLflow. Modules: `text` (the splitter: tokens, sentences, windows and their offset maps),
`windows` (each text's windows, with a cap), `entities` (`Entity`, `TextResult`), `assemble`
(generations -> entities in the texts' offsets), `annotator` (`Annotator`: a model in memory
that extracts). Nothing is imported here, so the HTTP ingress reads `text` without torch."""
