"""OpenAI's CLIP architecture with OpenAI's module and state-dict names (`clip.model`).

CoOp-family trainers reach into the model (`clip_model.transformer`, `.ln_final`,
`.visual.conv1`, `block.attn_mask`, ...), so the modules must be OpenAI's, not just the outputs:

    build_model(state_dict)   infer the architecture from an OpenAI-format state dict; fp16
                              matrices (convert_weights), strict load, eval mode, as OpenAI's
    convert_weights(model)    conv / linear / attention weights and both projections to fp16;
                              norms and embeddings stay fp32
    CLIP(...)                 the model; `dtype` is `visual.conv1.weight.dtype`

Every transformer works on sequence-first tensors (L, N, D); each text block holds the causal
mask and applies it itself, so `transformer(x)` alone is the text encoder's body.
"""
from collections import OrderedDict

import math

import torch
import torch.nn.functional as F
from torch import nn

# OpenAI gives every attention head 64 channels; a tiny test model gets at least one head.
HEAD_WIDTH = 64


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input and parameter dtypes, returned in the input's."""

    def forward(self, x):
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP was trained with."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm attention + MLP block on (L, N, D); `attn_mask` (additive) is applied inside."""

    def __init__(self, d_model, n_head, attn_mask=None, act_layer=QuickGELU):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", act_layer()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        # A plain attribute, not a buffer: OpenAI's checkpoints do not hold it, and MVLPT
        # replaces it per block with a slice for shorter prompts.
        self.attn_mask = attn_mask

    def attention(self, x):
        mask = self.attn_mask
        if mask is not None:
            length = x.shape[0]
            mask = mask[:length, :length].to(dtype=x.dtype, device=x.device)  # shorter prompts: leading block
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """`layers` residual attention blocks on (L, N, D); `width`, `layers`, `resblocks` as OpenAI's."""

    def __init__(self, width, layers, heads, attn_mask=None, act_layer=QuickGELU):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask, act_layer)
                                         for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class Bottleneck(nn.Module):
    """ResNet bottleneck whose stride is an average pool after the 3x3 conv (anti-aliased)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu3 = nn.ReLU(inplace=True)
        self.stride = stride
        self.downsample = None
        if stride > 1 or inplanes != out:
            # names "-1", "0", "1" are the checkpoint's keys (downsample.0.weight, downsample.1.*)
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, out, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(out)),
            ]))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        return self.relu3(y + identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map by one attention query: the mean token attends to all positions."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x):
        tokens = x.flatten(start_dim=2).permute(2, 0, 1)  # N C H W -> (H W) N C
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
        tokens = tokens + self.positional_embedding[:, None, :].to(tokens.dtype)
        out, _ = F.multi_head_attention_forward(
            query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=tokens.shape[-1],
            num_heads=self.num_heads, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            training=self.training, need_weights=False, use_separate_proj_weight=True,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
        )
        return out.squeeze(0)


class ModifiedResNet(nn.Module):
    """OpenAI's ResNet: 3-conv stem with average pool, anti-aliased strides, attention pooling."""

    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        half = width // 2
        self.conv1 = nn.Conv2d(3, half, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(half, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width  # advanced by _make_layer while the stages are built
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        stage = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        stage += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x):
        x = x.type(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class VisionTransformer(nn.Module):
    """ViT: patch conv, class token, learned positions, pre/post LayerNorm, projection of the class token."""

    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, act_layer=QuickGELU):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, act_layer=act_layer)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)
        x = x.flatten(start_dim=2).permute(0, 2, 1)  # N C H W -> N (H W) C
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # the blocks are sequence-first
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj if self.proj is not None else x


class CLIP(nn.Module):
    """OpenAI's CLIP. Constructor arguments as OpenAI's, plus keyword-only knobs for non-OpenAI weights.

    vision_layers: a 4-tuple builds a ModifiedResNet, an int a VisionTransformer.
    vision_heads: default as OpenAI derives it (ResNet width * 32 // 64, ViT width // 64, at least 1).
    act_layer: QuickGELU (OpenAI's); open_clip's non-OpenAI weights use nn.GELU.
    Besides OpenAI's attributes it has `embed_dim` and `image_resolution`.
    """

    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers,
                 *, vision_heads=None, act_layer=QuickGELU):
        super().__init__()
        self.context_length = context_length
        self.embed_dim = embed_dim
        self.image_resolution = image_resolution
        if isinstance(vision_layers, (tuple, list)):
            heads = vision_heads or max(1, vision_width * 32 // HEAD_WIDTH)
            self.visual = ModifiedResNet(vision_layers, embed_dim, heads, image_resolution, vision_width)
        else:
            heads = vision_heads or max(1, vision_width // HEAD_WIDTH)
            self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                            heads, embed_dim, act_layer=act_layer)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads,
                                       attn_mask=self.build_attention_mask(), act_layer=act_layer)
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self):
        """Random weights with OpenAI's scales (an untrained backbone; checkpoints overwrite them)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features ** -0.5
            for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(linear.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.init.zeros_(param)  # each residual block starts as the identity
        width, layers = self.transformer.width, self.transformer.layers
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=width ** -0.5 * (2 * layers) ** -0.5)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=width ** -0.5 * (2 * layers) ** -0.5)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def build_attention_mask(self):
        """Additive causal mask [L, L]: position i sees positions <= i."""
        return torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, image):
        return self.visual(image.type(self.dtype))

    def encode_text(self, text):
        x = self.token_embedding(text).type(self.dtype) + self.positional_embedding.type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        eot = text.argmax(dim=-1)  # the end-of-text id is the largest in each row
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        # None: the pre-projection features (the enhanced-base producer tunes its own projection)
        return x @ self.text_projection if self.text_projection is not None else x

    def forward(self, image, text):
        """(logits_per_image [N_img, N_text], logits_per_text) scaled cosine similarities."""
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def convert_weights(model):
    """Cast the matrices OpenAI's release keeps in fp16 (in place): conv, linear, attention, projections."""

    def to_half(module):
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"):
                tensor = getattr(module, name, None)
                if tensor is not None:
                    tensor.data = tensor.data.half()
        for name in ("text_projection", "proj"):
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.half()

    model.apply(to_half)
    return model


# Entries of OpenAI's TorchScript archives that describe the model and are not its weights.
ARCHIVE_KEYS = ("input_resolution", "context_length", "vocab_size")


def _count_blocks(state_dict, prefix):
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def architecture_from_state_dict(state_dict):
    """The CLIP constructor arguments an OpenAI-format state dict was saved from (OpenAI's rules)."""
    if "visual.proj" in state_dict:
        conv = state_dict["visual.conv1.weight"]
        patch = conv.shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = dict(image_resolution=patch * grid, vision_width=conv.shape[0], vision_patch_size=patch,
                      vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."))
    else:
        pool_positions = state_dict["visual.attnpool.positional_embedding"].shape[0]
        grid = round((pool_positions - 1) ** 0.5)
        if grid ** 2 + 1 != pool_positions:
            raise ValueError(f"visual.attnpool.positional_embedding has {pool_positions} rows, not a square grid + 1")
        vision = dict(image_resolution=grid * 32, vision_patch_size=None,
                      vision_width=state_dict["visual.layer1.0.conv1.weight"].shape[0],
                      vision_layers=tuple(_count_blocks(state_dict, f"visual.layer{i}.") for i in (1, 2, 3, 4)))
    width = state_dict["ln_final.weight"].shape[0]
    return dict(
        embed_dim=state_dict["text_projection"].shape[1],
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=width,
        transformer_heads=max(1, width // HEAD_WIDTH),
        transformer_layers=_count_blocks(state_dict, "transformer.resblocks."),
        **vision,
    )


def build_model(state_dict):
    """OpenAI's `build_model`: a CLIP in eval mode with fp16 matrices holding `state_dict` (strict).

    The architecture is inferred from the keys and shapes; archive-only entries are ignored
    and the caller's dict is not modified. Call `.float()` for fp32 (OpenAI's `load` does on CPU).
    """
    state_dict = {k: v for k, v in state_dict.items() if k not in ARCHIVE_KEYS}
    model = CLIP(**architecture_from_state_dict(state_dict))
    convert_weights(model)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
