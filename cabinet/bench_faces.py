"""`cabinet bench faces`: how often the door lets the wrong person in, and how fast it decides.

On any folder laid out DIR/<person>/<photos> (default: the shared faces; folders starting with
_ or . are not people), every photo is encoded once (each must hold exactly one face, else the
run stops naming the photo), then, with the door's policy (vision/identity.py):

- genuine trials: each photo of a person with two or more photos, against a gallery of every
  other photo (leave one out); accepted as someone else is a false accept; refused, or sent to
  the second factor without its owner among the candidates, is a false reject; sent to the
  second factor with its owner among them counts as second_factor;
- impostor trials: each photo of each person, against a gallery of everybody else (the person
  left out): any accept is a false accept; second_factor is counted too (the digits stop them);
- identify time: one frame, detect + encode + decide, against the whole gallery, per photo;
- matching time in galleries of 10k, 100k and 1M templates: the real templates plus synthetic
  ones (random around the real templates' mean, spread so two synthetic templates are as far
  apart as the median impostor pair), plain float32 search against vision.face_index.FaceIndex,
  and every trial decided again inside each gallery by both: `decisions_differ` (outcome,
  account, candidates, best and second-best account) must be 0.

Prints a table; with --json prints the JSON object; --out writes it to a file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from cabinet.errors import CabinetError, display_path
from firmware_bridge.bench import machine_facts, percentile
from vision import data
from vision.face_index import FaceIndex, exact_account_distances
from vision.faces import FaceError, FaceGallery, encode_photo, load_photo
from vision.identity import (ACCEPT, DEFAULT_POLICY, REFUSE, SECOND_FACTOR, IdentityPolicy, decide,
                             identify_encodings, identify_frames)

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


def load_people(root: Path) -> dict[str, list[Path]]:
    """Person -> photos; CabinetError naming the folder when there is nothing to bench."""
    if not root.is_dir():
        raise CabinetError(f"{display_path(root)}: no such folder; give --data DIR laid out "
                           f"DIR/<person>/<photos>")
    people = data.people(root)
    if not people:
        raise CabinetError(f"{display_path(root)}: no people in it; expected DIR/<person>/<photos> "
                           f"(JPEG or PNG; folders starting with _ are not people)")
    return people


def encode_people(people: dict[str, list[Path]]) -> dict[str, list[np.ndarray]]:
    """Person -> one encoding per photo; FaceError naming a photo without exactly one face."""
    found = {}
    for person, photos in people.items():
        encs = []
        for photo in photos:
            faces = encode_photo(photo)
            if len(faces) != 1:
                problem = "no face found" if not faces else f"{len(faces)} faces found"
                raise FaceError(display_path(photo), f"{problem}; a benchmark photo must show its "
                                f"person alone: replace it or move it out of the folder")
            encs.append(faces[0].encoding)
        found[person] = encs
    return found


def trial_list(encodings: dict[str, list[np.ndarray]]) -> list[tuple[str, str, int]]:
    """(kind, person, photo index): every genuine trial, then every impostor trial."""
    genuine = [("genuine", p, i) for p, encs in encodings.items() if len(encs) >= 2
               for i in range(len(encs))]
    impostor = [("impostor", p, i) for p, encs in encodings.items() for i in range(len(encs))]
    return genuine + impostor


def trial_gallery(encodings: dict[str, list[np.ndarray]], kind: str, person: str, index: int,
                  ) -> FaceGallery:
    gallery = FaceGallery()
    for p, encs in encodings.items():
        for i, enc in enumerate(encs):
            if (kind == "genuine" and (p, i) != (person, index)) or (kind == "impostor" and p != person):
                gallery.add(p, enc)
    return gallery


def score(kind: str, person: str, decision) -> str:
    """How a trial ended: ok, false_accept, false_reject, second_factor (or impostor_*)."""
    if kind == "genuine":
        if decision.outcome == ACCEPT:
            return "ok" if decision.account_id == person else "false_accept"
        if decision.outcome == SECOND_FACTOR and person in decision.candidates:
            return "second_factor"
        return "false_reject"
    if decision.outcome == ACCEPT:
        return "false_accept"
    return "impostor_second_factor" if decision.outcome == SECOND_FACTOR else "ok"


def run_trials(encodings: dict[str, list[np.ndarray]], policy: IdentityPolicy) -> dict:
    tally = {"genuine_trials": 0, "impostor_trials": 0, "false_accepts": 0, "false_rejects": 0,
             "second_factor": 0, "impostor_second_factor": 0, "genuine_accepted": 0,
             "impostor_refused": 0}
    genuine_d, impostor_d, notable = [], [], []
    for kind, person, i in trial_list(encodings):
        decision = identify_encodings([encodings[person][i]],
                                      trial_gallery(encodings, kind, person, i), policy)
        tally[f"{kind}_trials"] += 1
        result = score(kind, person, decision)
        if result == "ok":
            tally["genuine_accepted" if kind == "genuine" else "impostor_refused"] += 1
        if result in {"false_accept", "false_reject", "second_factor", "impostor_second_factor"}:
            tally[{"false_accept": "false_accepts", "false_reject": "false_rejects"}.get(result, result)] += 1
            notable.append({"trial": kind, "person": person, "photo": i, "result": result,
                            "outcome": decision.outcome, "reason": decision.reason,
                            "best": None if decision.best is None else
                            [decision.best.account_id, round(decision.best.distance, 3)]})
        if decision.best is not None:
            (genuine_d if kind == "genuine" else impostor_d).append(decision.best.distance)
    g = tally["genuine_trials"]
    tally.update({
        "false_reject_rate": round(tally["false_rejects"] / g, 4) if g else None,
        "second_factor_rate": round(tally["second_factor"] / g, 4) if g else None,
        "genuine_max_distance": round(max(genuine_d), 4) if genuine_d else None,
        "impostor_min_distance": round(min(impostor_d), 4) if impostor_d else None,
        "notable_trials": notable,
    })
    return tally


def leave_person_out_lines(encodings: dict[str, list[np.ndarray]]) -> list[dict]:
    """Would a line fitted without a person have kept them out? Per person left out: the most
    permissive zero-false-accept line the others allow (their closest pair of different people)
    and the held-out person's nearest stranger; `admitted` when that stranger is closer than
    the line, i.e. the line fitted on the others takes the person for someone else."""
    rows = []
    for person in encodings:
        rest = [(p, e) for p, encs in encodings.items() if p != person for e in encs]
        pairs = [float(np.linalg.norm(a - b)) for k, (p, a) in enumerate(rest)
                 for q, b in rest[k + 1:] if p != q]
        nearest = min(float(np.linalg.norm(a - b)) for a in encodings[person] for _, b in rest) \
            if rest else None
        line = min(pairs) if pairs else None
        rows.append({"person": person, "line_from_others": None if line is None else round(line, 4),
                     "nearest_stranger": None if nearest is None else round(nearest, 4),
                     "admitted": line is not None and nearest is not None and nearest < line})
    return rows


def pair_statistics(encodings: dict[str, list[np.ndarray]]) -> dict:
    """Same-person and different-person pair distances (mean, sd, extremes), and where a
    normal fit of the different-person distances puts the nearest stranger in a gallery of N
    accounts (the 1/N quantile): how close strangers come as the gallery grows."""
    from statistics import NormalDist
    flat = [(p, e) for p, encs in encodings.items() for e in encs]
    same, other = [], []
    for k, (p, a) in enumerate(flat):
        for q, b in flat[k + 1:]:
            (same if p == q else other).append(float(np.linalg.norm(a - b)))
    out: dict = {}
    for name, values in (("same_person", same), ("different_people", other)):
        out[name] = None if len(values) < 2 else {
            "pairs": len(values), "mean": round(float(np.mean(values)), 4),
            "sd": round(float(np.std(values, ddof=1)), 4),
            "min": round(min(values), 4), "max": round(max(values), 4)}
    if out["different_people"] is not None:
        m, sd = out["different_people"]["mean"], out["different_people"]["sd"]
        out["nearest_stranger_normal_fit"] = {
            str(n): round(m - sd * NormalDist().inv_cdf(1 - 1 / n), 3)
            for n in (1_000, 10_000, 100_000, 1_000_000)}
    return out


def identify_timing(people: dict[str, list[Path]], encodings: dict[str, list[np.ndarray]],
                    policy: IdentityPolicy) -> dict:
    """One frame per photo through detect + encode + decide against the whole gallery."""
    gallery = FaceGallery.from_templates((p, e) for p, encs in encodings.items() for e in encs)
    times = []
    for photos in people.values():
        for photo in photos:
            rgb = load_photo(photo)
            t0 = time.perf_counter()
            identify_frames([rgb], gallery, policy)
            times.append((time.perf_counter() - t0) * 1000)
    return {"n": len(times), "identify_p50_ms": round(percentile(times, 0.5), 1),
            "identify_p95_ms": round(percentile(times, 0.95), 1)}


def synthetic_gallery(encodings: dict[str, list[np.ndarray]], size: int, impostor_median: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(templates, account ids, how many real ones come first) for a gallery of `size`."""
    real = [(p, e) for p, encs in encodings.items() for e in encs]
    n_synth = max(0, size - len(real))
    rng = np.random.default_rng(seed)
    centre = np.mean([e for _, e in real], axis=0).astype(np.float32)
    sigma = np.float32(impostor_median / np.sqrt(2 * 128))
    matrix = np.empty((len(real) + n_synth, 128), dtype=np.float32)
    matrix[: len(real)] = [e for _, e in real]
    for lo in range(len(real), len(matrix), 1 << 18):
        hi = min(len(matrix), lo + (1 << 18))
        block = rng.standard_normal((hi - lo, 128), dtype=np.float32)
        matrix[lo:hi] = block * sigma + centre
    ids = np.asarray([p for p, _ in real] + [f"synthetic-{k}" for k in range(n_synth)], dtype=object)
    return matrix, ids, len(real)


def decision_key(d, policy: IdentityPolicy) -> tuple:
    """What two searches must agree on: outcome, account, candidates, and the best and
    second-best ACCOUNTS (within refuse_distance: a FaceIndex reports nothing beyond it)."""
    def near(a):
        return None if a is None or a.distance > policy.refuse_distance else a.account_id
    return d.outcome, d.account_id, d.candidates, near(d.best), near(d.second)


def _rss_mb() -> float:
    """This process's resident memory in MiB (Linux /proc; NaN elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def match_timing(encodings: dict[str, list[np.ndarray]], sizes: list[int], policy: IdentityPolicy,
                 impostor_median: float, seed: int) -> list[dict]:
    rows = []
    real_rows = [(p, i) for p, encs in encodings.items() for i in range(len(encs))]
    trials = trial_list(encodings)
    for size in sizes:
        matrix, ids, n_real = synthetic_gallery(encodings, size, impostor_median, seed)
        t0, rss0 = time.perf_counter(), _rss_mb()
        index = FaceIndex(ids, matrix)
        build_s, index_rss = time.perf_counter() - t0, _rss_mb() - rss0
        exact_ms, index_ms, index_cpu_ms, candidates, differ = [], [], [], [], 0
        within = policy.refuse_distance
        searches = []
        for kind, person, i in trials:
            skip = np.zeros(len(matrix), dtype=bool)
            for row, (p, j) in enumerate(real_rows):
                if (kind == "genuine" and (p, j) == (person, i)) or (kind == "impostor" and p == person):
                    skip[row] = True
            searches.append(([encodings[person][i]], skip))
        # each search timed on its own, all float32 ones first: a numpy (BLAS) product leaves its
        # threads spinning on both cores for a while, which would bill the index for them
        exact_found = []
        for probe, skip in searches:
            t0 = time.perf_counter()
            exact_found.append(exact_account_distances(matrix, ids, probe, within, skip))
            exact_ms.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.2)
        for (probe, skip), exact in zip(searches, exact_found):
            t0, c0 = time.perf_counter(), time.process_time()
            fast = index.account_distances(probe, within, skip)
            index_ms.append((time.perf_counter() - t0) * 1000)
            index_cpu_ms.append((time.process_time() - c0) * 1000)   # every thread's CPU
            candidates.append(index.candidates_last)
            a = decide(exact, policy, frames_seen=1, frames_used=1)
            b = decide(fast, policy, frames_seen=1, frames_used=1)
            if decision_key(a, policy) != decision_key(b, policy):
                differ += 1
        index.close()
        rows.append({
            "templates": len(matrix), "real_templates": n_real, "trials": len(trials),
            "index_threads": index.threads,
            "exact_float32_p50_ms": round(percentile(exact_ms, 0.5), 2),
            "exact_float32_p95_ms": round(percentile(exact_ms, 0.95), 2),
            "index_p50_ms": round(percentile(index_ms, 0.5), 2),
            "index_p95_ms": round(percentile(index_ms, 0.95), 2),
            "index_cpu_p50_ms": round(percentile(index_cpu_ms, 0.5), 2),
            "index_build_s": round(build_s, 2),
            "index_candidates_max": int(max(candidates)) if candidates else 0,
            "float32_mb": round(matrix.nbytes / 2**20, 1),
            "index_mb": round(index.nbytes / 2**20, 1),
            # what building it added to the process (onnxruntime keeps the codes packed for
            # its kernels besides the model's copy); None where /proc is not there
            "index_rss_mb": None if index_rss != index_rss else round(index_rss, 1),
            "decisions_differ": differ,
        })
        del matrix, index
    return rows


def run(root: Path, sizes: list[int], policy: IdentityPolicy = DEFAULT_POLICY, seed: int = 0) -> dict:
    load_before = os.getloadavg()[0]
    people = load_people(root)
    encodings = encode_people(people)
    result = {"benchmark": "faces", "data": str(root), "people": len(people),
              "photos": sum(len(p) for p in people.values()),
              "policy": {"accept_distance": policy.accept_distance,
                         "refuse_distance": policy.refuse_distance,
                         "min_margin": policy.min_margin, "min_frames": policy.min_frames}}
    result.update(run_trials(encodings, policy))
    result["leave_person_out"] = leave_person_out_lines(encodings)
    result["leave_person_out_admitted"] = sum(r["admitted"] for r in result["leave_person_out"])
    result["pairs"] = pair_statistics(encodings)
    result.update(identify_timing(people, encodings, policy))
    all_encs = [(p, e) for p, encs in encodings.items() for e in encs]
    impostor_pairs = [float(np.linalg.norm(a - b)) for k, (p, a) in enumerate(all_encs)
                      for q, b in all_encs[k + 1:] if p != q]
    median_impostor = float(np.median(impostor_pairs)) if impostor_pairs else 0.9
    result["impostor_pair_median"] = round(median_impostor, 4)
    result["matching"] = match_timing(encodings, sizes, policy, median_impostor, seed)
    by_size = {row["templates"]: row for row in result["matching"]}
    one_m = next((row for n, row in by_size.items() if n >= 1_000_000), None)
    result["match_ms_1m"] = None if one_m is None else one_m["index_p50_ms"]
    result["match_p95_ms_1m"] = None if one_m is None else one_m["index_p95_ms"]
    result["match_exact_ms_1m"] = None if one_m is None else one_m["exact_float32_p50_ms"]
    result["match_cpu_ms_1m"] = None if one_m is None else one_m["index_cpu_p50_ms"]
    result["decisions_differ"] = sum(row["decisions_differ"] for row in result["matching"])
    result["machine"] = machine_facts()
    # runnable processes at the start and the end: times on a busy machine are pessimistic
    result["machine"]["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def render(r: dict) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    out = [f"{r['people']} people, {r['photos']} photos in {r['data']}; policy accept <= "
           f"{r['policy']['accept_distance']}, margin >= {r['policy']['min_margin']}, "
           f"second factor <= {r['policy']['refuse_distance']}; {r['machine']['nproc']} cores, "
           f"{r['machine']['cpu']}, load average {r['machine']['load_average_1m']}",
           f"{'genuine trials (leave one out)':<44}{r['genuine_trials']:>10}",
           f"{'impostor trials (person left out)':<44}{r['impostor_trials']:>10}",
           f"{'false accepts (target 0)':<44}{r['false_accepts']:>10}",
           f"{'false rejects (target <= 2%)':<44}{r['false_rejects']:>10}  {pct(r['false_reject_rate'])}",
           f"{'second factor, genuine (target <= 5%)':<44}{r['second_factor']:>10}  {pct(r['second_factor_rate'])}",
           f"{'second factor, impostors':<44}{r['impostor_second_factor']:>10}",
           f"{'largest genuine / smallest impostor dist.':<44}{r['genuine_max_distance']!s:>10} / "
           f"{r['impostor_min_distance']}",
           f"{'identify one frame p50 / p95 ms':<44}{r['identify_p50_ms']:>10} / {r['identify_p95_ms']}",
           f"{'line fitted without a person admits them':<44}{r['leave_person_out_admitted']:>10}"
           f"  of {len(r['leave_person_out'])} people left out",
           f"{'templates':>10}{'float32 p50':>13}{'index p50':>11}{'index p95':>11}"
           f"{'CPU p50':>9}{'MB arrays':>11}{'MB RSS':>8}{'cands':>7}{'differ':>8}"]
    for m in r["matching"]:
        out.append(f"{m['templates']:>10,}{m['exact_float32_p50_ms']:>13}{m['index_p50_ms']:>11}"
                   f"{m['index_p95_ms']:>11}{m['index_cpu_p50_ms']:>9}{m['index_mb']:>11}"
                   f"{m['index_rss_mb']!s:>8}{m['index_candidates_max']:>7}"
                   f"{m['decisions_differ']:>8}")
    fit = (r["pairs"] or {}).get("nearest_stranger_normal_fit")
    if fit:
        out.append("nearest stranger (normal fit) in a gallery of " + ", ".join(
            f"{int(n):,}: {d}" for n, d in fit.items()))
    for t in r["notable_trials"]:
        out.append(f"  {t['trial']} {t['person']} photo {t['photo']}: {t['result']} "
                   f"({t['outcome']}, {t['reason']}, nearest {t['best']})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cabinet bench faces", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None,
                   help="folder of DIR/<person>/<photos> (default: ../shared/data/faces, "
                        "or $CABINET_DATA/faces)")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    p.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                   help="gallery sizes for the matching time, comma separated "
                        "(default 10000,100000,1000000; empty for none)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes {args.sizes!r}: give whole numbers separated by commas, e.g. 10000,100000")
    if any(s < 1 for s in sizes):
        p.error(f"--sizes {args.sizes!r}: every size must be at least 1")
    root = args.data if args.data is not None else data.data_root() / "faces"
    try:
        result = run(root, sizes, seed=args.seed)
    except (CabinetError, FaceError) as e:
        print(f"cabinet bench faces: {e}", file=sys.stderr)
        return 1
    if args.out is not None:
        try:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as e:
            print(f"cabinet bench faces: --out {args.out}: cannot write it ({e.strerror}); "
                  f"give a file in a folder that exists", file=sys.stderr)
            return 1
    print(json.dumps(result) if args.json else render(result))
    return 0 if result["false_accepts"] == 0 and result["decisions_differ"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
