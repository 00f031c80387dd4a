"""Faces in real-world inputs: find, track, crop and paste back (pixels in, boxes and pixels out).

This package knows nothing of the diffusion networks. It holds:

* :mod:`.finder`: the optional trained face finder (mediapipe's FaceMesh and full-range face detector, the
  ``personalive[faces]`` extra); absent, every caller falls back to centre crops;
* :mod:`.boxes`: box arithmetic, including upstream's ``crop_face`` / ``scale_bb`` geometry;
* :mod:`.crop`: the motion encoder's landmark face crops and the square face crops of frames and photos;
* :mod:`.track`: per-frame boxes turned into a steady track (misses held, smoothed with look-ahead);
* :mod:`.paste`: a generated square frame pasted back into the full photo through a feathered mask;
* :mod:`.smoothing`: the temporal filter on keypoint sequences and the jitter figure.
"""
