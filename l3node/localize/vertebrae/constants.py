"""The counter's tuning, in one place: every threshold in mm or HU, with why it is that.

Thresholds are physical (mm, HU), never pixels or slices, so 1 mm and 5 mm series, 0.6 mm and
1 mm pixels are judged alike; each module of :mod:`l3node.localize.vertebrae` reads them from
here so a retune touches one file.
"""

BONE_HU = 130.0  # cortical and most cancellous bone; below most contrast-enhanced vessels' cores
CLOSE_MM = 4.0  # closing radius: shuts the gaps in a body's thin cortical ring
MAX_BODY_RADIUS_MM = 24.0  # thicker than this is the heart, liver or bladder, not a body
CORTEX_HU = 320.0  # a body's cortex reaches this even at 3 mm pixels; most vessels do not
CORE_MM = 7.0  # bone at least this far from soft tissue is a body's core (ribs, laminae are not)
PEAK_SEPARATION_MM = 10.0  # thickness maxima closer than this are one structure
THICK_BEHIND_MM = 8.0  # bone behind a body (its arch) is thinner than this
MIDLINE_MM = 45.0  # body centre within this of the trunk's left-right centre (scoliosis margin)
HOLE_MAX_MM2 = 2500.0  # fill holes up to this (a body's cancellous core), not the pelvic ring
CANCELLOUS_MIN_HU = 0.0  # a hole denser than this is marrow (or the canal) rather than fat
RAYS = 24  # rays cast from the column's centre for the ring profile
RAY_MM = 26.0  # ... this long: past a lumbar body's cortex, short of most of the aorta
SMOOTH_MM = 1.5  # in-plane smoothing before the ray test: noise peaks are not cortex
DISC_RING_MAX = 0.35  # a disc: the profile dips into this lowest fraction of its local range ...
DISC_RING_PROMINENCE = 0.35  # ... and that much fewer than in the bodies either side
DISC_RANGE_MM = 100.0  # see _discs
SOFT_TISSUE_HU = 40.0  # a disc's rays see at least this (fat and air are lower)
MIN_DISC_GAP_MM = 18.0  # discs closer than this are one (lower thoracic and lumbar bodies)
RING_PERCENTILE = 35.0  # of the rays' maxima: a third may miss (a tilted endplate, a thin cortex)
BODY_REACH_MM = MIDLINE_MM + MAX_BODY_RADIUS_MM + 10.0  # body pixels lie this near the centre
CROP_HALF_WIDTH_MM = 130.0  # the crop around the trunk's left-right centre (ribs, alae)
CROP_FRONT_MM = 40.0  # ... from this far in front of its antero-posterior centre
CROP_BACK_MM = 190.0  # ... to this far behind it
MIN_BODY_MM = 12.0  # a body (or a body cut by the field of view) shorter than this is ignored
VERTEBRA_PERIOD_MM = (18.0, 52.0)  # body + disc height, thoracic to a tall man's lumbar
RIB_HU = 300.0  # rib cortex; above fat, muscle and most enhanced vessels
RIB_LATERAL_MM = 58.0  # bone farther than this from the body centre, at its height, is a rib
RIB_BAND_MM = (-5.0, 30.0)  # ... within this antero-posterior band around the body centre
RIB_FRACTION = 0.5  # a body carries ribs when this fraction of its slices shows them
RIB_MIN_MM2 = 12.0  # that much lateral bone on one side counts as a rib
WIDTH_HU = 200.0  # bone for the width test: the sacral alae, not rib heads at 130 HU
SACRAL_WIDTH_MM = 75.0  # bone this wide through the column is the sacrum with its alae ...
SACRAL_WIDTH_RATIO = 1.7  # ... and this many times the median width of the bodies above
BODY_HALF_MM = 10.0  # the narrowest body (upper thoracic) is wider than twice this
SACRAL_RUN_MM = 30.0  # the sacrum: most samples of this much column below its top are wide
SACRAL_FRACTION = 0.6
SPLIT_FRACTION = 0.65  # see _merge_split_bodies
HEIGHT_RANGE = (0.7, 1.45)  # L2-L5 heights within this of their median, or no sacral count
SACRAL_GAP_MM = 15.0  # the L5-S1 disc lies within this above the first wide sample
SACRAL_REF_MM = 120.0  # the bodies whose widths the sacrum is compared with lie this far above
