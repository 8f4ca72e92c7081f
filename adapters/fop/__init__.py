"""FOP (Table 3): the spec (:mod:`.spec`), its SimAM² layers (:mod:`.layers`), working directories and
input checks (:mod:`.checks`), test.py evaluation (:mod:`.evaluate`), synthetic features (:mod:`.synth`)
and Table 3 (:mod:`.table`)."""
