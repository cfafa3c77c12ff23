"""What a served model finds in sentences written outside every corpus: each entity type it
knows, on free text, with offsets checked against the text sent.

Serves `--model-uri` on a local Ray (the `biogner serve` application, Serve on 127.0.0.1),
posts the sentences below (written for this probe: none is from a corpus; they mention
chemicals, diseases, genes and proteins, species, anatomy, cells and cell lines), and prints
each sentence with the entities returned, then a count per type. Writes
bench/results/<name>.json.

Usage: python -m bench.free_text_probe --model-uri runs:/<id>/model [--types A,B]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence

import httpx

from bench.common import write_json
from biogner.serve.app import parse_config, resolve_locations
from biogner.serve.local import start_app, stop_app, wait_ready

SENTENCES = [
    "Cisplatin-induced nephrotoxicity was reduced by magnesium supplementation in rats.",
    "Mutations in the BRCA2 gene increase the risk of ovarian cancer in women.",
    "Interleukin-6 mRNA was elevated in activated T cells from patients with lupus.",
    "Zebrafish larvae exposed to ethanol developed defects of the heart and the liver.",
    "Staphylococcus aureus infection of the skin was treated with vancomycin.",
    "The p53 protein binds DNA and arrests the cell cycle in human fibroblasts.",
    "HeLa cells were transfected with a plasmid encoding the GATA-1 transcription factor.",
    "Chronic exposure to arsenic causes skin lesions and bladder cancer in humans.",
    "Insulin resistance in skeletal muscle precedes type 2 diabetes in obese mice.",
    "The hepatitis B virus X protein activates NF-kappaB in Jurkat cells.",
    "Lithium carbonate is still used to treat bipolar disorder despite its renal toxicity.",
    "Knockout of the TNF receptor protected the lungs of mice from influenza pneumonia.",
    "Aspirin lowered the incidence of colorectal adenomas in the large intestine.",
    "Monocytes from the peripheral blood released IL-1 beta after exposure to lipopolysaccharide.",
    "Arabidopsis thaliana plants lacking the PHYB gene flowered early.",
    "Dopamine depletion in the striatum underlies the rigidity of Parkinson disease.",
    "The cornea of rabbits was burned with sodium hydroxide to model chemical injury.",
    "Escherichia coli strains resistant to ciprofloxacin carried the qnrS gene.",
    "Glucocorticoid receptor mRNA was reduced in the hippocampus of stressed rats.",
    "K562 erythroleukemia cells express high levels of the BCR-ABL fusion protein.",
    "Smoking doubles the risk of emphysema and of lung cancer.",
    "Vitamin D deficiency was common among elderly patients with hip fractures.",
    "The hERG potassium channel is blocked by the antibiotic erythromycin.",
    "Mosquitoes of the species Aedes aegypti transmit dengue virus to humans.",
]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--types", help="comma-separated entity types (default: all)")
    parser.add_argument("--port", type=int, default=8013)
    parser.add_argument("--name", default="free_text_probe")
    args = parser.parse_args(argv)
    from biogner.runtime import init_ray

    init_ray()
    cfg = resolve_locations(
        parse_config(
            {"model_uri": args.model_uri, "limits": {"request_timeout_s": 600}},
        )
    )
    base = start_app(cfg, "127.0.0.1", args.port, "free-text-probe")
    try:
        info = wait_ready(base)
        body: dict[str, object] = {"texts": SENTENCES}
        if args.types:
            body["entity_types"] = args.types.split(",")
        r = httpx.post(f"{base}/v1/extract", json=body, timeout=600)
        r.raise_for_status()
        results = r.json()["results"]
        model = httpx.get(f"{base}/v1/model", timeout=60).json()
    finally:
        stop_app("free-text-probe")
    per_type: Counter[str] = Counter()
    rows = []
    for text, result in zip(SENTENCES, results, strict=True):
        found = []
        for e in result["entities"]:
            assert text[e["start"] : e["end"]] == e["text"], (text, e)  # exact offsets
            per_type[e["label"]] += 1
            found.append(f"{e['text']} [{e['label']}]")
        rows.append({"text": text, "entities": result["entities"]})
        print(f"- {text}\n    {'; '.join(found) or '(none)'}")
    print(f"\ntypes the model knows: {model.get('entity_types')} ({info.get('status')})")
    print("entities per type: " + ", ".join(f"{t} {n}" for t, n in per_type.most_common()))
    write_json(args.name, {"model": args.model_uri, "per_type": dict(per_type), "rows": rows})


if __name__ == "__main__":
    main()
