#!/usr/bin/env python3
"""Writes RecBole's own leave-one-out split of MovieLens-100k as a small text fixture.

RecBole 1.2.1 itself (not a replay of it) loads data/ml-100k with the configuration a new user
gets for `dataset='ml-100k'` plus the sequential protocol of the paper
(eval_args = {'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'full',
'group_by': 'user'}), runs `create_dataset` and `data_preparation`, and writes, per user, the
validation target, the test target and the number of training samples, as file tokens:

    tests/fixtures/recbole/ml-100k-split-k0.tsv   no filter
    tests/fixtures/recbole/ml-100k-split-k5.tsv   5-core (user and item [5,inf))

`tests/data_ml100k.rs` compares the crate's split with these files, user by user. CI does not run
this script (it installs no PyTorch); the fixtures are committed.

Pinned versions (requirements.txt beside this file): recbole==1.2.1, torch==2.5.1, numpy<2
(1.26.4), pandas<2.3 (2.2.3), scipy<1.14 (1.13.1), on Python 3.11. Any torch RecBole 1.2.1 runs
with should give the same files: the split is pure index bookkeeping, no randomness.

    python3 -m venv /tmp/rb && /tmp/rb/bin/pip install -r scripts/recbole-fixture/requirements.txt
    scripts/fetch-ml100k.sh
    /tmp/rb/bin/python scripts/recbole-fixture/make_split_fixture.py [--data data] [--out tests/fixtures/recbole]

What RecBole 1.2.1 does to the order (read in its source, and what the fixture pins): its
built-in `properties/dataset/ml-100k.yaml` sets `normalize_all: True`, so after filtering and
remapping, `Dataset._normalize` min-max scales every float column of the interactions in float64,
timestamp included: t' = (t - min) / (max - min), min and max over the surviving interactions.
`_change_feat_format` then stores float columns as float32 (`torch.FloatTensor`), and
`SequentialDataset.data_augmentation` sorts by [user, timestamp] with `Interaction.sort`, which is
two `np.argsort(kind="stable")` passes (timestamp, then user). So each user's interactions are in
the order of float32(t'), ties (equal float32 values) in file order. `Dataset.build` then sorts
the augmented samples by the target's timestamp (stable, so each user's order is kept) and
`leave_one_out` takes each user's last sample as test and the one before as validation.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
from collections import Counter


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def run(data_dir, kcore):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    config_dict = {
        "data_path": data_dir,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "mode": "full",
            "group_by": "user",
        },
        # Cross-entropy training (SASRec's default loss) samples no negatives.
        "train_neg_sample_args": None,
        "checkpoint_dir": os.path.join(os.getcwd(), "saved"),
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
    }
    if kcore:
        config_dict["user_inter_num_interval"] = f"[{kcore},inf)"
        config_dict["item_inter_num_interval"] = f"[{kcore},inf)"
    config = Config(model="SASRec", dataset="ml-100k", config_dict=config_dict)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)

    uid_field = dataset.uid_field
    iid_field = dataset.iid_field

    def user_tokens(ds):
        return dataset.id2token(uid_field, ds.inter_feat[uid_field].numpy())

    def targets(ds):
        users = user_tokens(ds)
        items = dataset.id2token(iid_field, ds.inter_feat[iid_field].numpy())
        out = {}
        for u, i in zip(users, items):
            if u in out:
                sys.exit(f"user {u} has two samples in one held-out part")
            out[u] = i
        return out

    def sequences(parts):
        # Each user's whole sequence in RecBole's order, rebuilt from its own samples: the
        # first sample's first input item, then every sample's target (train, valid, test).
        seqs = {}
        list_field = iid_field + config["LIST_SUFFIX"]
        for ds in parts:
            users = user_tokens(ds)
            items = dataset.id2token(iid_field, ds.inter_feat[iid_field].numpy())
            lists = ds.inter_feat[list_field].numpy()
            lengths = ds.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
            first = dataset.id2token(iid_field, lists[:, 0])
            last = dataset.id2token(iid_field, lists[np.arange(len(lists)), lengths - 1])
            for u, i, f, l in zip(users, items, first, last):
                if u not in seqs:
                    seqs[u] = [f]
                # The input must end with the item before the target: the rebuild is sound.
                if seqs[u][-1] != l:
                    sys.exit(f"user {u}: a sample's input ends with {l}, expected {seqs[u][-1]}")
                seqs[u].append(i)
        return seqs

    def id_fingerprint(field):
        tokens = dataset.field2id_token[field][1:]  # id 0 is [PAD]
        return f"{fnv1a(' '.join(tokens).encode('utf-8')):016x}"

    train_counts = Counter(user_tokens(train.dataset))
    valid_t = targets(valid.dataset)
    test_t = targets(test.dataset)
    seqs = sequences([train.dataset, valid.dataset, test.dataset])
    fingerprint = {u: f"{fnv1a(' '.join(q).encode('utf-8')):016x}" for u, q in seqs.items()}
    users = sorted(set(train_counts) | set(valid_t) | set(test_t), key=int)
    header = (
        f"# RecBole 1.2.1 leave-one-out split of ml-100k, k-core {kcore or 'off'}: "
        f"{len(users)} users, {sum(train_counts.values())} train, {len(valid_t)} valid, "
        f"{len(test_t)} test samples. Made by scripts/recbole-fixture/make_split_fixture.py.\n"
        f"# ids: users {id_fingerprint(uid_field)} items {id_fingerprint(iid_field)}"
        " (FNV-1a 64 of the tokens of ids 1, 2, ... joined by single spaces)\n"
        "# sequence_fnv1a: FNV-1a 64 of the user's whole sequence of item tokens in RecBole's order,\n"
        "# joined by single spaces (rebuilt from the samples: first input item, then the targets).\n"
        "user_id\tvalid_target\ttest_target\ttrain_samples\tsequence_fnv1a\n"
    )
    rows = [
        f"{u}\t{valid_t.get(u, '-')}\t{test_t.get(u, '-')}\t{train_counts.get(u, 0)}"
        f"\t{fingerprint.get(u, '-')}\n"
        for u in users
    ]
    return header + "".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--data", default=os.path.join(root, "data"), help="folder holding ml-100k/")
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "recbole"))
    args = ap.parse_args()
    data_dir = os.path.abspath(args.data)
    out_dir = os.path.abspath(args.out)
    if not os.path.isfile(os.path.join(data_dir, "ml-100k", "ml-100k.inter")):
        sys.exit(f"{data_dir}/ml-100k/ml-100k.inter not found: run scripts/fetch-ml100k.sh")
    import recbole

    if recbole.__version__ != "1.2.1":
        sys.exit(f"RecBole {recbole.__version__} found; the fixture is of 1.2.1")
    os.makedirs(out_dir, exist_ok=True)
    # RecBole writes logs and checkpoints into the working directory: keep them out of the repo.
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        for k in (0, 5):
            text = run(data_dir, k)
            path = os.path.join(out_dir, f"ml-100k-split-k{k}.tsv")
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            print(f"wrote {path}: {text.splitlines()[0]}")


if __name__ == "__main__":
    main()
