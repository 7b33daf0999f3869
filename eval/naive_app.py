"""The naive Space app `eval throughput` compares against: the FLUX.1-schnell demo pattern.

One pipeline loaded at import, one `infer()` that calls it, `gr.Blocks` with the default queue (one
request at a time, first in first out). No accounts, safety filters, storage or batching: what most
image Spaces run. Started by `python -m eval throughput` as

    python eval/naive_app.py MODEL_DIR PORT
"""

import random
import sys

import gradio as gr
import numpy as np
import torch
from diffusers import DiffusionPipeline

MODEL_DIR, PORT = sys.argv[1], int(sys.argv[2])
pipe = DiffusionPipeline.from_pretrained(MODEL_DIR, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
MAX_SEED = np.iinfo(np.int32).max


def infer(prompt, seed=42, randomize_seed=False, width=64, height=64, guidance_scale=1.5,
          num_inference_steps=6, num_images=1, progress=gr.Progress(track_tqdm=True)):
    if randomize_seed:
        seed = random.randint(0, MAX_SEED)
    generator = torch.Generator().manual_seed(seed)
    images = pipe(prompt=prompt, width=width, height=height, num_inference_steps=num_inference_steps,
                  generator=generator, guidance_scale=guidance_scale,
                  num_images_per_prompt=int(num_images)).images
    return images, seed


with gr.Blocks() as demo:
    prompt = gr.Text(label="Prompt", placeholder="Enter your prompt")
    run_button = gr.Button("Run")
    result = gr.Gallery(label="Result")
    with gr.Accordion("Advanced Settings", open=False):
        seed = gr.Slider(label="Seed", minimum=0, maximum=MAX_SEED, step=1, value=0)
        randomize_seed = gr.Checkbox(label="Randomize seed", value=True)
        width = gr.Slider(label="Width", minimum=64, maximum=1024, step=8, value=64)
        height = gr.Slider(label="Height", minimum=64, maximum=1024, step=8, value=64)
        guidance_scale = gr.Slider(label="Guidance", minimum=0, maximum=20, step=0.5, value=1.5)
        num_inference_steps = gr.Slider(label="Steps", minimum=1, maximum=50, step=1, value=6)
        num_images = gr.Slider(label="Images", minimum=1, maximum=4, step=1, value=1)
    gr.on(triggers=[run_button.click, prompt.submit], fn=infer,
          inputs=[prompt, seed, randomize_seed, width, height, guidance_scale, num_inference_steps, num_images],
          outputs=[result, seed], api_name="infer")

demo.launch(server_name="127.0.0.1", server_port=PORT)
