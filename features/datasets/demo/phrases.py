"""The demo corpus' phrase bank: movie-review sentences at five sentiment levels.

Templates x subjects give a few hundred distinct sentences per level, so a 300-clip corpus rarely repeats one.
Every template takes any subject (all singular nouns) and stays short (at most ten words), so espeak-ng says it
in 2-4 s at any rate the demo uses.
"""

from __future__ import annotations

import numpy as np

SUBJECTS = (
    "the movie",
    "this film",
    "the ending",
    "the opening scene",
    "the acting",
    "the soundtrack",
    "the story",
    "the script",
    "the main character",
    "the villain",
    "the dialogue",
    "the camera work",
    "the cast",
    "the pacing",
    "the plot",
    "the sequel",
    "the lead actor",
    "the lead actress",
    "the final battle",
    "the love story",
    "the music",
    "the humor",
    "the first half",
    "the trailer",
)

# Upper bound of each level's text sentiment in [-1, 1], and its templates ({s}: subject, {S}: capitalised).
LEVELS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (
        -0.6,
        (
            "I absolutely hated {s}, it was awful.",
            "{S} was a complete waste of time.",
            "{S} was terrible from start to finish.",
            "Honestly, {s} was the worst I have seen.",
            "I could not stand {s} at all.",
            "{S} was a total disaster.",
            "{S} was painful and stupid.",
            "I regret watching {s}, it was horrible.",
            "{S} made me angry, it was so bad.",
            "I was disgusted by {s}, truly dreadful.",
        ),
    ),
    (
        -0.2,
        (
            "I did not really like {s}.",
            "{S} was a bit disappointing.",
            "{S} was rather boring, to be honest.",
            "I expected more from {s}.",
            "{S} felt slow and forgettable.",
            "I was not impressed by {s}.",
            "{S} had too many weak moments.",
            "Sadly, {s} did not work for me.",
            "{S} was weaker than I had hoped.",
            "I found {s} somewhat dull.",
        ),
    ),
    (
        0.2,
        (
            "Next I want to talk about {s}.",
            "{S} was about what I expected.",
            "I have mixed feelings about {s}.",
            "{S} was neither good nor bad.",
            "Here is what I think of {s}.",
            "{S} was okay, nothing special.",
            "So let me describe {s} for you.",
            "There is not much to say about {s}.",
            "I saw {s} with a friend.",
            "{S} is what I will discuss now.",
        ),
    ),
    (
        0.6,
        (
            "I liked {s} quite a lot.",
            "{S} was pretty good overall.",
            "I enjoyed {s} more than I expected.",
            "{S} was nice and fairly entertaining.",
            "All in all, {s} worked well for me.",
            "{S} had some really good moments.",
            "I would say {s} was solid.",
            "I was pleasantly surprised by {s}.",
            "{S} was charming in its own way.",
            "{S} kept me interested most of the time.",
        ),
    ),
    (
        1.0,
        (
            "I absolutely loved {s}, it was brilliant.",
            "{S} was one of the best I have seen.",
            "Honestly, {s} was a pure delight.",
            "{S} was fantastic, I would watch it again.",
            "Wow, {s} completely blew me away.",
            "I was thrilled by {s} from start to finish.",
            "{S} was perfect, truly wonderful.",
            "What an amazing experience {s} was.",
            "I adored {s}, it made my day.",
            "{S} was outstanding in every way.",
        ),
    ),
)


def templates_for(sentiment: float) -> tuple[str, ...]:
    """The templates of the level a text sentiment in [-1, 1] falls into."""
    for upper, templates in LEVELS:
        if sentiment < upper:
            return templates
    return LEVELS[-1][1]


def sentence(sentiment: float, rng: np.random.Generator) -> str:
    """A sentence whose sentiment matches ``sentiment`` (one of five levels), drawn with ``rng``."""
    templates = templates_for(sentiment)
    template = templates[rng.integers(len(templates))]
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    return template.format(s=subject, S=subject[0].upper() + subject[1:])
