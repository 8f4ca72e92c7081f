"""AVE (Table 2): the AVGA (:mod:`.avga`) and PSP (:mod:`.psp`) specs, what they share
(:mod:`.common`), the AVE data (:mod:`.synth`) and Table 2 (:mod:`.table`)."""
