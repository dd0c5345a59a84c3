"""Write the bundled default model: the ``tiny`` preset with fixed seeded weights (no training).

    python samples/make_default_model.py [--out lipforce_sdk/assets/default] [--seed 0]
"""

import argparse
from pathlib import Path

from lipforce_sdk.model import LipSyncModel, save_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "lipforce_sdk" / "assets" / "default"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = LipSyncModel.from_preset("tiny", seed=a.seed)
    save_model(model, a.out, weights_origin=f"seeded random init (torch.manual_seed({a.seed})), untrained")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
