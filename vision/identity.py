"""Who is at the door: accept, ask for a second factor, or refuse, from several face frames.

How it decides (docs/identity.md has the measurement behind every number):

1. Each frame from the face camera counts only when it holds exactly one face; a frame with
   none or several is not encoded and not counted (a second person in view is not guessed at).
2. Per frame, every account's distance is its nearest template's dlib distance. Across the
   counted frames an account's distance is the upper median of its per-frame distances (the
   (n//2 + 1)-th smallest: the larger of two, the middle of three, the 3rd of four or five):
   more than half the frames are at least that close, so an impostor needs most frames close,
   not one lucky frame, and a genuine customer survives one blurred frame in three. An order
   statistic, unlike a mean, does not change when distances beyond refuse_distance are only
   known to be beyond it, which lets a large gallery skip measuring them (face_index.py).
3. With `best` the nearest account and `second` the next ACCOUNT (never another template of
   the same account):
   - accept `best` when best <= accept_distance (0.45) and second - best >= min_margin (0.10);
   - second factor (PIN or the last 4 digits of the phone, or the QR code) when best <=
     refuse_distance (0.60) but the accept test fails: too far to be sure, or two accounts
     too close to tell apart; `candidates` lists every account within refuse_distance, best
     first, so the kiosk can check the typed digits against them;
   - refuse otherwise, with the reason.

Why these numbers (docs/identity.md has the measurement). On ../shared/data/faces (ten people,
16 leave-one-out genuine trials, 21 impostor trials with the person left out of the gallery) the
genuine nearest distances reach 0.513 and the closest different people are 0.636 apart, so a line
in 0.52-0.63 separates them, but only them: left out one person at a time, a line fitted in the
others' gap admits the person left out as a look-alike in 2 of 10 folds. A normal fit of the
different-people distances (mean 0.876, sd 0.084) puts a face's nearest stranger at 0.62 in a
gallery of 1,000 accounts and 0.48 in a million. So the accept line sits five standard
deviations below the mean stranger (0.45), the uncertain band runs to 0.60 (where the face still
narrows the account down for the digits to finish), and beyond 0.60 nobody is asked for digits.
The margin 0.10 is the spread of one person's distances (sd 0.095 over the 23 same-person
pairs): two accounts closer than that cannot be told apart by the face; the smallest margin of
a genuine trial here is 0.20, so the rule costs our customers nothing. On our trials this asks
1 of 16 genuine customers (6%: alex_lacamoire's third photo at 0.513) for the second factor and
accepts nobody wrongly; the line that passes that photo (0.514) would admit 0.7% of strangers
per visit at a cabinet of 1,000 accounts under the same fit. (The lines were drawn on the
figures before detection moved to one look, 0.517 / 0.632; they hold on both.)

The policy is a pure function of distances (`decide`); `identify_frames` runs the camera frames
through vision.faces and the gallery. `FrameTally` takes them one at a time for a caller that
stops as soon as `settled_accept` proves that no frame still to come can change an accept (with
three frames: two counted, the account within the accept line in both and every rival the
margin beyond it in both), which is the same decision three frames give, taken a frame sooner.
A gallery is anything with `account_distances(encodings, within)` (vision.faces.FaceGallery,
exact; vision.face_index.FaceIndex for very large galleries).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol, Sequence

import numpy as np

from vision.faces import DEFAULT_MAX_SIDE, FaceObservation, observe_single_face

ACCEPT, SECOND_FACTOR, REFUSE = "accept", "second_factor", "refuse"
OUTCOMES = (ACCEPT, SECOND_FACTOR, REFUSE)

# Reasons (IdentityDecision.reason): what the kiosk says and what the journal keeps.
MATCHED = "matched"
UNCERTAIN = "uncertain"          # best account inside the band
AMBIGUOUS = "ambiguous"          # second-best account too close to the best
NO_FACE = "no_face"              # no counted frame, and no frame had any face
SEVERAL_FACES = "several_faces"  # no counted frame, and some frame had several faces
TOO_FEW_FRAMES = "too_few_frames"
NOT_RECOGNISED = "not_recognised"

MESSAGES = {
    MATCHED: "recognised",
    UNCERTAIN: "please confirm: type your PIN or the last 4 digits of your phone, or scan the QR code",
    AMBIGUOUS: "please confirm: type your PIN or the last 4 digits of your phone, or scan the QR code",
    NO_FACE: "no face in view: look at the camera",
    SEVERAL_FACES: "several faces in view: step up to the camera alone",
    TOO_FEW_FRAMES: "face not seen clearly: look at the camera alone for a moment",
    NOT_RECOGNISED: "face not recognised: use the QR code or enrol at the kiosk",
}


class AccountSearch(Protocol):
    def account_distances(self, encodings: Sequence[np.ndarray], within: float,
                          ) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class IdentityPolicy:
    accept_distance: float = 0.45
    refuse_distance: float = 0.60
    min_margin: float = 0.10
    min_frames: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.accept_distance <= self.refuse_distance < 2.0:
            raise ValueError(f"identity policy: need 0 < accept_distance ({self.accept_distance}) "
                             f"<= refuse_distance ({self.refuse_distance}) < 2")
        if not 0.0 <= self.min_margin <= self.refuse_distance - self.accept_distance:
            # an account beyond refuse_distance must never be the reason for a second factor:
            # galleries report only the accounts within it (FaceIndex), so the margin must fit
            raise ValueError(f"identity policy: min_margin {self.min_margin} must be in 0.."
                             f"{self.refuse_distance - self.accept_distance:.2f} "
                             f"(refuse_distance - accept_distance)")
        if self.min_frames < 1:
            raise ValueError(f"identity policy: min_frames {self.min_frames} must be at least 1")


DEFAULT_POLICY = IdentityPolicy()


@dataclass(frozen=True)
class AccountDistance:
    account_id: str
    distance: float  # upper median over the counted frames of the nearest template's distance


@dataclass(frozen=True)
class IdentityDecision:
    """The door's answer and its evidence. `account_id` is set only for accept."""

    outcome: str                     # accept | second_factor | refuse
    reason: str                      # one of the reason constants above
    account_id: str | None
    best: AccountDistance | None     # None: no counted frame, or no account near enough to report
    second: AccountDistance | None   # None: no other account (within refuse_distance, for FaceIndex)
    candidates: tuple[str, ...]      # second_factor: accounts within refuse_distance, best first
    frames_seen: int
    frames_used: int

    @property
    def message(self) -> str:
        return MESSAGES[self.reason]

    @property
    def margin(self) -> float | None:
        if self.best is None or self.second is None:
            return None
        return self.second.distance - self.best.distance


def decide(distances: Mapping[str, Sequence[float]], policy: IdentityPolicy = DEFAULT_POLICY, *,
           frames_seen: int, frames_used: int, several_faces: bool = False) -> IdentityDecision:
    """The decision from per-account, per-counted-frame distances (a pure function).

    `distances[account]` holds one distance per counted frame; an account left out is farther
    than refuse_distance in every frame. `several_faces` says some uncounted frame had more
    than one face (only used to word a refusal when no frame counted).
    """
    if frames_used < 0 or frames_seen < frames_used:
        raise ValueError(f"identity decision: frames_used {frames_used} must be in 0..frames_seen "
                         f"({frames_seen})")

    def refuse(reason: str, best=None, second=None) -> IdentityDecision:
        return IdentityDecision(REFUSE, reason, None, best, second, (), frames_seen, frames_used)

    if frames_used == 0:
        return refuse(SEVERAL_FACES if several_faces else NO_FACE)
    if frames_used < policy.min_frames:
        return refuse(TOO_FEW_FRAMES)
    combined = []
    for account_id, per_frame in distances.items():
        values = np.asarray(per_frame, dtype=np.float64)
        if values.shape != (frames_used,):
            raise ValueError(f"identity decision: account {account_id} has {values.size} "
                             f"distances for {frames_used} counted frames")
        combined.append(AccountDistance(str(account_id), float(np.sort(values)[frames_used // 2])))
    combined.sort(key=lambda a: (a.distance, a.account_id))
    best = combined[0] if combined else None
    second = combined[1] if len(combined) > 1 else None
    if best is None or best.distance > policy.refuse_distance:
        return refuse(NOT_RECOGNISED, best, second)
    margin_ok = second is None or second.distance - best.distance >= policy.min_margin
    if best.distance <= policy.accept_distance and margin_ok:
        return IdentityDecision(ACCEPT, MATCHED, best.account_id, best, second, (best.account_id,),
                                frames_seen, frames_used)
    candidates = tuple(a.account_id for a in combined if a.distance <= policy.refuse_distance)
    return IdentityDecision(SECOND_FACTOR, AMBIGUOUS if not margin_ok else UNCERTAIN, None,
                            best, second, candidates, frames_seen, frames_used)


def settled_accept(distances: Mapping[str, Sequence[float]], policy: IdentityPolicy = DEFAULT_POLICY,
                   *, frames_used: int, frames_left: int) -> str | None:
    """The account that `decide` accepts however the `frames_left` frames still to come turn
    out, or None while some of them could still change the outcome or the account.

    A frame still to come may not count (no face, several) or may put any account at any
    distance, each account independently. With u of them counted (0..frames_left) the upper
    median is the (n//2)-th smallest of n = frames_used + u values: an account's is at most its
    (n//2)-th known value (the new ones far) and at least its (n//2 - u)-th (the new ones at
    0). The accept stands when, for every u, the accepted account's largest possible distance
    is within the accept line and every other account's smallest possible one is beyond it by
    the margin. An account not reported in a frame is farther than refuse_distance there, so
    refuse_distance is a lower bound for it (and an account never reported is at least that far
    in every known frame). With three frames this is: two counted frames, the account within
    the line in both, and every other account at least the margin beyond the larger of the two
    in both: the middle of three can then only be as the two say.
    """
    if frames_used < max(1, policy.min_frames) or frames_left < 0:
        return None
    now = decide(distances, policy, frames_seen=frames_used, frames_used=frames_used)
    if now.outcome != ACCEPT:
        return None
    known = {str(a): np.sort(np.asarray(v, dtype=np.float64)) for a, v in distances.items()}
    floor = np.full(frames_used, policy.refuse_distance)  # an account never reported
    mine = known[now.account_id]
    rivals = [np.minimum(v, policy.refuse_distance) for a, v in known.items() if a != now.account_id]
    rivals.append(floor)
    for u in range(frames_left + 1):
        m = (frames_used + u) // 2
        if m >= frames_used:          # the new frames alone could be the median: unknown
            return None
        worst = mine[m]
        if worst > policy.accept_distance:
            return None
        if m - u < 0:                 # the new frames alone could pull a rival to 0
            return None
        nearest_rival = min(float(r[m - u]) for r in rivals)
        if not (nearest_rival - worst >= policy.min_margin and nearest_rival > worst):
            return None
    return now.account_id


class FrameTally:
    """Frames from the face camera counted one at a time, for a caller that wants to stop as
    soon as the answer is known (the controller, which captures the next frame meanwhile).

    `frames` is how many frames the caller means to look at. `add(frame)` counts one (detect,
    and encode when it holds exactly one face), `missed()` one the camera did not give;
    `settled()` is the accept that no frame still to come can change (`settled_accept`), or
    None; `decision()` decides on the frames so far, exactly as `identify_frames` on them.
    """

    def __init__(self, gallery: AccountSearch, policy: IdentityPolicy = DEFAULT_POLICY, *,
                 frames: int, bgr: bool = False, max_side: int = DEFAULT_MAX_SIDE) -> None:
        if frames < 1:
            raise ValueError(f"identity frames: {frames} frames to look at; need at least 1")
        self.gallery, self.policy, self.frames = gallery, policy, int(frames)
        self.bgr, self.max_side = bgr, max_side
        self.encodings: list[np.ndarray] = []
        self.seen = 0
        self.given_up = 0
        self.several = False
        self._found: dict[str, np.ndarray] | None = {}

    @property
    def frames_left(self) -> int:
        return max(0, self.frames - self.seen - self.given_up)

    def add(self, frame: np.ndarray) -> None:
        self.add_observed(*observe_single_face(frame, bgr=self.bgr, max_side=self.max_side))

    def add_observed(self, faces: int, face: FaceObservation | None) -> None:
        """A frame the caller already looked at (`observe_single_face`: how many faces, the
        face when exactly one), counted without detecting it again."""
        if faces < 0 or (face is None) == (faces == 1):
            raise ValueError(f"identity frames: {faces} faces with "
                             f"{'no' if face is None else 'an'} encoded face; observe_single_face "
                             f"encodes a frame exactly when it holds one face")
        self.seen += 1
        self.several = self.several or faces > 1
        if face is not None:
            self.encodings.append(face.encoding)
            self._found = None

    def missed(self) -> None:
        """A frame the camera did not give: one fewer to come, none seen."""
        self.given_up += 1

    def _distances(self) -> dict[str, np.ndarray]:
        if self._found is None:
            self._found = self.gallery.account_distances(self.encodings, self.policy.refuse_distance) \
                if self.encodings else {}
        return self._found

    def settled(self) -> IdentityDecision | None:
        if not self.encodings:
            return None
        account = settled_accept(self._distances(), self.policy, frames_used=len(self.encodings),
                                 frames_left=self.frames_left)
        return None if account is None else self.decision()

    def decision(self) -> IdentityDecision:
        return decide(self._distances(), self.policy, frames_seen=self.seen,
                      frames_used=len(self.encodings), several_faces=self.several)


def identify_encodings(encodings: Sequence[np.ndarray], gallery: AccountSearch,
                       policy: IdentityPolicy = DEFAULT_POLICY, *, frames_seen: int | None = None,
                       several_faces: bool = False) -> IdentityDecision:
    """The decision for encodings of counted frames (one face each) against a gallery."""
    encodings = list(encodings)
    seen = len(encodings) if frames_seen is None else frames_seen
    found = gallery.account_distances(encodings, policy.refuse_distance) if encodings else {}
    return decide(found, policy, frames_seen=seen, frames_used=len(encodings),
                  several_faces=several_faces)


def identify_frames(frames: Iterable[np.ndarray], gallery: AccountSearch,
                    policy: IdentityPolicy = DEFAULT_POLICY, *, bgr: bool = False,
                    max_side: int = DEFAULT_MAX_SIDE) -> IdentityDecision:
    """Frames from the face camera in, the door's decision out.

    Frames are RGB uint8 (pass `bgr=True` for frames straight from a vision.cameras camera);
    a frame that is not an image raises vision.faces.FaceError naming the face camera frame.
    """
    encodings, seen, several = [], 0, False
    for frame in frames:
        seen += 1
        faces, face = observe_single_face(frame, bgr=bgr, max_side=max_side)
        several = several or faces > 1
        if face is not None:
            encodings.append(face.encoding)
    return identify_encodings(encodings, gallery, policy, frames_seen=seen, several_faces=several)
