"""`hub eval` as a shop runs it beside a running hub: each mode's and weight's recall@k, MRR and nDCG@10 equal
the metrics computed here from the API's own rankings of the same queries (the random model's quality is not
the point; the arithmetic and the wiring are)."""

from __future__ import annotations

import json
import math
import signal

import httpx

from tests.images import photo
from tests.test_cli_e2e import environment, hub, start_service, wait_until  # noqa: F401 - the fixture

ROWS = [("Linen shirt", "P1"), ("Linen shirt, back", "P1"), ("Red linen dress", "P2"), ("Red gown", "P3"),
        ("Wool jumper", "P4"), ("Denim jacket", "P5"), ("Silk scarf", "")]
QUERIES = [("linen", ["P1", "P2"], []), ("red dress", ["P2", "P3"], []), ("scarf", [], ["Silk scarf"]),
           ("jumper", ["P4"], [])]


def expected_metrics(rankings: list[list[tuple[str, int]]], judged: list[set[tuple[str, int]]], k: int) -> dict:
    recall = mrr = ndcg = 0.0
    for ranked, relevant in zip(rankings, judged, strict=True):
        recall += len(relevant & set(ranked[:k])) / len(relevant)
        ranks = [n for n, key in enumerate(ranked, start=1) if key in relevant]
        mrr += 1 / ranks[0] if ranks else 0
        ideal = sum(1 / math.log2(n + 1) for n in range(1, min(len(relevant), 10) + 1))
        ndcg += sum(1 / math.log2(n + 1) for n in ranks if n <= 10) / ideal
    n = len(judged)
    return {f"recall@{k}": round(recall / n, 4), "mrr": round(mrr / n, 4), "ndcg@10": round(ndcg / n, 4)}


def test_eval_reports_each_mode_and_weight(environment, tmp_path):  # noqa: F811
    env = {**environment, "HUB_SWEEP_SECONDS": "1", "HUB_STOREFRONT_RATE_LIMIT": "100000/minute"}
    folder = tmp_path / "catalog"
    folder.mkdir()
    lines = ["file,name,product_id"]
    for n, (name, product) in enumerate(ROWS):
        (folder / f"{n}.jpg").write_bytes(photo(700 + n))
        lines.append(f'{n}.jpg,"{name}",{product}')
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    server, port, _ = start_service(env, tmp_path)
    try:
        shop = json.loads(hub("shops", "create", "--name", "Judge", "--email", "judge@example.com", "--json",
                              env=env, cwd=tmp_path).stdout)
        assert hub("import", str(folder), "--shop", str(shop["id"]), env=env, cwd=tmp_path).returncode == 0
        headers = {"Authorization": f"Bearer {shop['secret_key']}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as api:
            wait_until(lambda: all(i["status"] == "ready" for i in api.get("/api/v1/images").json()["items"]))
            images = {i["name"]: i for i in api.get("/api/v1/images").json()["items"]}
            product = {name: images[name]["product_id"] for name, p in ROWS if p}
            by_sku = {p: product[name] for name, p in ROWS if p}
            judged_file = tmp_path / "judged.jsonl"
            judged_file.write_text("\n".join(json.dumps({"query": q, "relevant": [by_sku[p] for p in ps],
                                                         "relevant_images": [images[i]["id"] for i in imgs]})
                                             for q, ps, imgs in QUERIES) + "\n")
            done = hub("eval", str(judged_file), "--shop", str(shop["id"]), "--weights", "0.3,0.7", "--k", "3",
                       "--json", env=env, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            assert [(r["mode"], r["weight"]) for r in report] == [("vector", None), ("lexical", None),
                                                                  ("hybrid", 0.3), ("hybrid", 0.7)]
            judged = [{("product", by_sku[p]) for p in ps} | {("image", images[i]["id"]) for i in imgs}
                      for _, ps, imgs in QUERIES]
            for row in report:
                rankings = []
                for query, _, _ in QUERIES:
                    body = {"prompt": query, "limit": 10, "mode": row["mode"]} | (
                        {"weight": row["weight"]} if row["weight"] is not None else {})
                    results = api.post("/api/v1/recommendations", json=body).json()["results"]
                    rankings.append([("product", r["product_id"]) if r["product_id"] else ("image", r["id"])
                                     for r in results])
                assert {key: row[key] for key in ("recall@3", "mrr", "ndcg@10")} == \
                    expected_metrics(rankings, judged, 3), row
                assert row["queries"] == len(QUERIES)
            lexical = next(r for r in report if r["mode"] == "lexical")
            assert lexical["recall@3"] == 1.0  # every judged query's words are in its products' names

            table = hub("eval", str(judged_file), "--shop", str(shop["id"]), "--modes", "lexical", env=env,
                        cwd=tmp_path)
            assert table.returncode == 0 and "| lexical |  | 4 | 1.0000 |" in table.stdout, table.stdout
            (tmp_path / "bad.jsonl").write_text('{"query": "x", "relevant": []}\n')
            bad = hub("eval", str(tmp_path / "bad.jsonl"), "--shop", str(shop["id"]), env=env, cwd=tmp_path)
            assert bad.returncode != 0 and "line 1: no relevant product" in bad.stderr
            missing = hub("eval", str(judged_file), "--shop", "999", env=env, cwd=tmp_path)
            assert missing.returncode != 0 and "shop 999 not found" in missing.stderr
            assert "Traceback" not in bad.stderr + missing.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
