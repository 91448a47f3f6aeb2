"""Where the face sits in each demo speaker's photo: the crop around it and the landmarks the expressions move.

Measured once with MediaPipe Face Mesh (``corpus.measure_face``) and committed, because Face Mesh's float
results depend on the CPU (its image transforms run OpenCV's SIMD dispatch; disabling AVX in OpenCV moves the
landmarks), and a landmark that moves moves every warped pixel of a clip. The photos are fixed, so their geometry
is too; ``tests/features/test_demo.py`` checks that Face Mesh still finds it within a fraction of a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaceGeometry:
    """A square crop of a photo (left, top, side in photo pixels) and Face Mesh landmarks of that crop, by
    landmark index, as fractions of the crop's side (so they hold for any rendered size)."""

    crop: tuple[int, int, int]
    points: dict[int, tuple[float, float]]


# Face Mesh indices: 33/263 outer eye corners, 61/291 mouth corners, 70 63 105 66 107 / 300 293 334 296 336 brows.
FACES = {
    "astronaut": FaceGeometry(
        crop=(137, 27, 176),
        points={
            33: (0.3260, 0.4203),
            61: (0.3651, 0.6359),
            63: (0.3105, 0.3441),
            66: (0.3931, 0.3410),
            70: (0.2879, 0.3642),
            105: (0.3461, 0.3358),
            107: (0.4485, 0.3510),
            263: (0.6826, 0.4370),
            291: (0.6178, 0.6503),
            293: (0.7084, 0.3617),
            296: (0.6246, 0.3496),
            300: (0.7289, 0.3851),
            334: (0.6729, 0.3491),
            336: (0.5678, 0.3549),
        },
    ),
    "0-f1-su-ph.jpg": FaceGeometry(
        crop=(0, 0, 512),
        points={
            33: (0.3367, 0.4592),
            61: (0.4382, 0.7435),
            63: (0.3161, 0.3797),
            66: (0.3999, 0.3657),
            70: (0.2933, 0.4067),
            105: (0.3517, 0.3656),
            107: (0.4568, 0.3724),
            263: (0.6968, 0.4588),
            291: (0.6083, 0.7370),
            293: (0.7155, 0.3814),
            296: (0.6320, 0.3677),
            300: (0.7391, 0.4066),
            334: (0.6798, 0.3677),
            336: (0.5759, 0.3739),
        },
    ),
    "0-f15-hao-ph.jpg": FaceGeometry(
        crop=(0, 0, 512),
        points={
            33: (0.3132, 0.4864),
            61: (0.3596, 0.7217),
            63: (0.2959, 0.4003),
            66: (0.3804, 0.3955),
            70: (0.2711, 0.4229),
            105: (0.3332, 0.3906),
            107: (0.4349, 0.4046),
            263: (0.6742, 0.4963),
            291: (0.6101, 0.7346),
            293: (0.6971, 0.4106),
            296: (0.6080, 0.4001),
            300: (0.7220, 0.4362),
            334: (0.6581, 0.3980),
            336: (0.5516, 0.4068),
        },
    ),
    "15-f13-anc-ph.jpg": FaceGeometry(
        crop=(0, 0, 512),
        points={
            33: (0.2599, 0.5186),
            61: (0.3311, 0.7628),
            63: (0.2367, 0.4559),
            66: (0.3076, 0.4450),
            70: (0.2197, 0.4749),
            105: (0.2665, 0.4449),
            107: (0.3576, 0.4466),
            263: (0.6169, 0.5044),
            291: (0.5257, 0.7648),
            293: (0.6287, 0.4351),
            296: (0.5256, 0.4309),
            300: (0.6642, 0.4550),
            334: (0.5812, 0.4259),
            336: (0.4674, 0.4390),
        },
    ),
    "45-m7-di-ph.jpg": FaceGeometry(
        crop=(0, 27, 485),
        points={
            33: (0.1399, 0.5062),
            61: (0.1509, 0.7514),
            63: (0.1168, 0.4472),
            66: (0.1396, 0.4395),
            70: (0.1214, 0.4656),
            105: (0.1232, 0.4375),
            107: (0.1656, 0.4445),
            263: (0.3977, 0.5202),
            291: (0.2976, 0.7690),
            293: (0.4022, 0.4468),
            296: (0.2919, 0.4355),
            300: (0.4489, 0.4703),
            334: (0.3485, 0.4340),
            336: (0.2408, 0.4408),
        },
    ),
    "single_face.jpg": FaceGeometry(
        crop=(96, 81, 375),
        points={
            33: (0.3159, 0.4485),
            61: (0.3780, 0.6623),
            63: (0.2908, 0.3770),
            66: (0.3605, 0.3662),
            70: (0.2739, 0.3984),
            105: (0.3205, 0.3653),
            107: (0.4076, 0.3702),
            263: (0.6283, 0.4407),
            291: (0.5900, 0.6553),
            293: (0.6470, 0.3644),
            296: (0.5589, 0.3576),
            300: (0.6748, 0.3852),
            334: (0.6071, 0.3539),
            336: (0.5077, 0.3657),
        },
    ),
}
