"""``hub model init-test``: a randomly initialised CLIP checkpoint written with ``save_pretrained``.

Its rankings are meaningless. It exists so that tests and smoke runs load a model through exactly the same
``from_pretrained`` code as FashionCLIP, offline. ``full_size=True`` writes the real ViT-B/32 architecture
(the compute cost of FashionCLIP) for benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

FASHION_WORDS = """
a an and or with without for of in on the to from by at as is are
red blue green black white grey gray pink purple yellow orange brown beige navy cream gold silver
dark light pale bright pastel neon multicolor striped floral plaid checked dotted polka dots print
printed pattern patterns patterned solid plain embroidered lace sequin leather denim cotton linen silk wool
cashmere velvet satin knit knitted chiffon suede fleece jersey corduroy tweed sheer
dress dresses skirt skirts top tops shirt shirts blouse blouses tshirt t-shirt tee sweater sweaters
cardigan hoodie sweatshirt jacket jackets coat coats blazer suit suits jeans trousers pants shorts
jumpsuit romper leggings swimsuit bikini lingerie pajamas shoes sneakers boots heels sandals loafers
bag bags handbag backpack hat cap scarf belt gloves socks jewelry necklace earrings watch sunglasses
summer winter spring autumn fall evening party wedding casual formal business sporty vintage retro
elegant classic minimalist bohemian boho streetwear romantic modern chic cute oversized slim fit
fitted loose long short midi maxi mini sleeve sleeves sleeveless neck collar hood pocket pockets
button buttons zip zipper high low waist women men woman man girls boys kids baby children unisex
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level alphabet of CLIP's (and GPT-2's) BPE: every byte maps to a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def tokenizer_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP BPE vocabulary: every byte, plus merges trained so that each fashion word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    alphabet = list(_bytes_to_unicode().values())
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False
    )
    bpe.train_from_iterator([" ".join(FASHION_WORDS)] * 4, trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = {}
    for token in alphabet + [c + "</w>" for c in alphabet] + sorted(state["vocab"], key=state["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    for special in ("<|startoftext|>", "<|endoftext|>"):  # last, so the end token has the highest id
        vocab[special] = len(vocab)
    return vocab, merges  # type: ignore[return-value]


def write_test_checkpoint(folder: Path, *, full_size: bool = False, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tokenizer_files()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    text = {
        "vocab_size": len(vocab),
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    if full_size:  # ViT-B/32 with a 512-d projection: FashionCLIP's shapes and cost
        image_size = 224
        config = CLIPConfig(text_config=text, projection_dim=512)
    else:
        image_size = 32
        config = CLIPConfig(
            text_config=text | {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 2},
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "image_size": image_size, "patch_size": 8},
            projection_dim=512,
        )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    (folder / "README.md").write_text(
        "Randomly initialised CLIP checkpoint written by `hub model init-test`.\n"
        "For tests and smoke runs only: its rankings are meaningless.\n"
    )
    return folder
