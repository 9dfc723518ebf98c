"""Llama 3.1 Nemotron Nano VL 8B's page and rules on its CPU twin, on the real architecture.

One server for the module. The twin is vLLM's `LlamaNemotronVLChatModel` with the real tiling
processor: an image becomes 1 to 12 tiles of 64 x 64 pixels chosen by its aspect ratio (plus a
thumbnail when there is more than one), each tile (64/16)^2 x 0.5^2 = 4 `<image>` tokens inside
`<img>...</img>`. So the prompt's tokens tell how many tiles of each image reached the model.
"""

from __future__ import annotations

import pytest

from tests.support.media import image_data_url
from tests.support.seed_checks import (  # noqa: F401  (collected here, run against this twin)
    chat,
    refused,
    test_seed_example_with_curl,
    test_seed_example_with_openai_sdk,
    test_seed_langchain_example,
    test_seed_models_and_health,
)
from tests.support.seeds import (
    FP16_QUESTION,
    NEMOTRON,
    NEMOTRON_IMAGE_FIRST,
    SPECIFICATIONS_PNG,
    TOOLS,
)

# Real-architecture twins run in `make test-twins` (see the Makefile), not `make test`.
pytestmark = pytest.mark.real_twin


def tokens_and_prompt(response) -> tuple[int, str]:
    assert response.status_code == 200, response.text
    out = response.json()
    return out["usage"]["prompt_tokens"], out["prompt_text"]


PROFILE = "llama-3.1-nemotron-nano-vl-8b-v1-tiny"


def test_img_tag_becomes_the_same_image_part(twin):
    as_part = tokens_and_prompt(
        chat(twin, NEMOTRON, messages=NEMOTRON_IMAGE_FIRST, max_tokens=1, return_prompt_text=True)
    )
    as_tag = tokens_and_prompt(
        chat(
            twin,
            NEMOTRON,
            max_tokens=1,
            return_prompt_text=True,
            messages=[
                {"role": "user", "content": f'<img src="{SPECIFICATIONS_PNG}" /> {FP16_QUESTION}'}
            ],
        )
    )
    assert as_tag == as_part
    assert "<img" not in as_tag[1]


def test_images_are_put_before_text(twin):
    text_first = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": FP16_QUESTION},
                {"type": "image_url", "image_url": {"url": SPECIFICATIONS_PNG}},
            ],
        }
    ]
    _, prompt = tokens_and_prompt(
        chat(twin, NEMOTRON, messages=text_first, max_tokens=1, return_prompt_text=True)
    )
    assert prompt.index("<image>") < prompt.index("How many times")


def test_gif_is_refused(twin):
    gif = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url("GIF")}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
    error = refused(chat(twin, NEMOTRON, messages=gif), "image_formats")
    assert "accepts JPEG, PNG" in error["message"]
    assert error["param"] == "messages[0].content[0]"


def test_four_images_pass_five_do_not(twin):
    part = NEMOTRON_IMAGE_FIRST[0]["content"][0]
    four = [{"role": "user", "content": [part] * 4 + [{"type": "text", "text": "Compare"}]}]
    assert chat(twin, NEMOTRON, messages=four, max_tokens=1).status_code == 200
    five = [{"role": "user", "content": [part] * 5 + [{"type": "text", "text": "Compare"}]}]
    error = refused(chat(twin, NEMOTRON, messages=five), "max_images_per_prompt")
    assert "NIM_MAX_IMAGES_PER_PROMPT=4" in error["message"]


def test_no_tools_and_no_reasoning_effort(twin):
    hi = [{"role": "user", "content": "Hi"}]
    refused(chat(twin, NEMOTRON, messages=hi, tools=TOOLS), "tools_supported")
    refused(chat(twin, NEMOTRON, messages=hi, reasoning_effort="high"), "reasoning_effort_values")


# --- the real architecture -----------------------------------------------------------------

TILE = 64  # the twin's tile side (preprocessor_config.json image_size)
TOKENS_PER_TILE = (TILE // 16) ** 2 // 4  # patch 16, pixel shuffle 0.5 (downsample_ratio)
MAX_TILES = 12  # max_num_tiles, as the real checkpoint


def tiles(width: int, height: int) -> int:
    """Tiles the real processor makes of an image (InternVL-style dynamic tiling, as in
    Llama 3.1 Nemotron Nano VL's image processor): of the grids of 1 to MAX_TILES tiles, smallest
    first, the first to maximise (share of the image the grid covers, at most 0.6) x (how close
    its aspect ratio is to the image's); then a thumbnail of the whole image if the grid has
    more than one tile."""
    grids = sorted(
        {
            (c, r)
            for n in range(1, MAX_TILES + 1)
            for c in range(1, n + 1)
            for r in range(1, n + 1)
            if c * r <= MAX_TILES
        },
        key=lambda grid: grid[0] * grid[1],
    )
    aspect = width / height

    def score(grid: tuple[int, int]) -> float:
        cover = min((grid[0] * grid[1] * TILE * TILE) / (width * height), 0.6)
        target = grid[0] / grid[1]
        return cover * min(target / aspect, aspect / target)

    best = max(grids, key=score)  # max keeps the first of equal scores
    count = best[0] * best[1]
    return count + 1 if count > 1 else count


def image_prompt(*sizes: tuple[int, int], text: str = "Describe the image.") -> list[dict]:
    parts = [
        {"type": "image_url", "image_url": {"url": image_data_url("PNG", size, "blue")}}
        for size in sizes
    ]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def vl_ids() -> dict[str, int]:
    """The twin's ids of `<img>`, `<image>` and `</img>` (the builder's tokenizer is
    deterministic, so these are the served model's)."""
    from nimctl.modelgen.nemotron import IMAGE, IMG_END, IMG_START, build_tokenizer

    tok = build_tokenizer()
    return {name: tok.token_to_id(name) for name in (IMG_START, IMAGE, IMG_END)}


def image_blocks(twin, vl_ids: dict[str, int], messages: list[dict], **body) -> list[int]:
    """The `<image>` tokens of each `<img>...</img>` block of the prompt the engine ran, in
    order, and a check that nothing else is inside a block."""
    response = chat(twin, NEMOTRON, messages=messages, max_tokens=1, return_token_ids=True, **body)
    assert response.status_code == 200, response.text
    blocks: list[int] = []
    inside = False
    for token in response.json()["prompt_token_ids"]:
        if token == vl_ids["<img>"]:
            assert not inside
            inside = True
            blocks.append(0)
        elif token == vl_ids["</img>"]:
            assert inside
            inside = False
        else:
            assert (token == vl_ids["<image>"]) == inside
            if inside:
                blocks[-1] += 1
    assert not inside
    return blocks


def test_the_engine_runs_the_real_architecture_from_the_twins_remote_code(twin):
    log = twin.log_path.read_text(errors="replace")
    # vLLM's registry maps this architecture to LlamaNemotronVLChatModel, and to nothing else.
    assert "Resolved architecture: Llama_Nemotron_Nano_VL" in log
    assert "trust_remote_code=True" in log
    assert "nimctl-tiny-nemotron-nano-vl" in log  # the generated checkpoint, not a hub model
    # The template never loops over content parts, so vLLM hands it strings, images first.
    assert "chat template content format to be 'string'" in log


@pytest.mark.parametrize(
    "size",
    [(64, 64), (10, 10), (256, 64), (64, 256), (400, 300), (1000, 100)],
    ids=lambda size: f"{size[0]}x{size[1]}",
)
def test_an_image_is_its_tiles_times_four_tokens(twin, vl_ids, size):
    """The C-RADIO tower and the projector run for every tile (the request fails otherwise).
    1000 x 100 is a tie between 10 x 1 and 12 x 1 tiles: the smaller grid wins, as in the real
    processor."""
    assert image_blocks(twin, vl_ids, image_prompt(size)) == [tiles(*size) * TOKENS_PER_TILE]


def test_prompt_tokens_grow_by_four_a_tile(twin):
    """The usage a client is billed agrees: the same text with a one-tile image and a
    thirteen-tile one."""

    def tokens(size: tuple[int, int]) -> int:
        response = chat(twin, NEMOTRON, messages=image_prompt(size), max_tokens=1)
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens"]

    assert tokens((400, 300)) - tokens((64, 64)) == (tiles(400, 300) - 1) * TOKENS_PER_TILE


def test_no_image_is_more_than_twelve_tiles_and_a_thumbnail(twin, vl_ids):
    assert tiles(4000, 3000) == MAX_TILES + 1
    assert image_blocks(twin, vl_ids, image_prompt((4000, 3000))) == [
        (MAX_TILES + 1) * TOKENS_PER_TILE
    ]


def test_each_image_is_tiled_on_its_own_in_message_order(twin, vl_ids):
    sizes = [(256, 64), (64, 64), (400, 300)]
    assert image_blocks(twin, vl_ids, image_prompt(*sizes)) == [
        tiles(*size) * TOKENS_PER_TILE for size in sizes
    ]


def test_images_go_before_the_text_in_llama_turns(twin):
    """Text, image, text, image: images first (nimctl's images_before_text rule, and vLLM does
    the same for a template that takes content as a string: one `<image>` line per image, then
    the texts, a line each), in Llama 3.1's turn layout."""
    url = image_data_url("PNG", (64, 64), "blue")
    parts = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "with"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    out = chat(
        twin,
        NEMOTRON,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}],
        max_tokens=1,
        return_prompt_text=True,
    ).json()
    assert out["prompt_text"] == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\n<image>\nCompare\nwith<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"max_dynamic_patch": 40}, {"max_dynamic_patch": 1}, {"dynamic_image_size": False}],
    ids=["more tiles", "fewer tiles", "no tiling"],
)
def test_a_client_cannot_change_the_tiling(twin, kwargs):
    """vLLM, when a server lets requests set processor kwargs, honours max_dynamic_patch even
    above the checkpoint's max_num_tiles (40 gave 36 tiles on vLLM's own server). nimctl does not
    let requests set them for this model, and says so with a 400 before vLLM sees the request."""
    error = refused(
        chat(twin, NEMOTRON, messages=image_prompt((400, 300)), mm_processor_kwargs=kwargs),
        "request_mm_kwargs",
    )
    assert error["param"] == "mm_processor_kwargs"


def test_a_text_only_request_has_no_image_block(twin, vl_ids):
    assert image_blocks(twin, vl_ids, [{"role": "user", "content": "Hi"}]) == []
