"""Face2Text: facial attributes from whichever sources are present -> a sentence, and its negation.

Sources, each optional:
* insightface's gender/age model, as ``{"gender": "male" | "female" | 1 | 0, "age": 31}`` (``"sex":
  "M" | "F"`` is accepted too), typically merged into ``IdentityCondition.attributes``;
* CelebA-40 attributes (``{"Male": True, "No_Beard": 0.93, ...}``, bools or probabilities), either in
  the same dict or predicted by :class:`CelebAAttributeModel` from an ONNX model at a local path;
* text the user supplies, which extends or overrides the sentence (``IPFVRConfig.user_prompt_mode``).

The paper runs a language model over the attribute labels; we fill a template instead
(``IPFVRConfig.prompt_template``), e.g. "a close-up video of a young man with a beard, ...". The
attribute-negation string feeds the attribute negative stream: known attributes give their
opposite ("Male" -> "woman", "No_Beard" -> "beard").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ipfvr_core.errors import ConfigError

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)  # the standard CelebA order of the 40 binary labels
_CELEBA_BY_LOWER = {name.lower(): name for name in CELEBA_ATTRIBUTES}

# Present attribute -> phrase after "with". Expression (Smiling, Mouth_Slightly_Open) changes per frame
# and image-quality labels (Blurry, Attractive) describe the photo, so neither goes into the sentence.
_DETAIL_PHRASES: dict[str, str] = {
    "Eyeglasses": "eyeglasses",
    "Mustache": "a mustache",
    "Goatee": "a goatee",
    "5_o_Clock_Shadow": "stubble",
    "Sideburns": "sideburns",
    "Bald": "a bald head",
    "Receding_Hairline": "a receding hairline",
    "Bangs": "bangs",
    "Black_Hair": "black hair",
    "Blond_Hair": "blond hair",
    "Brown_Hair": "brown hair",
    "Gray_Hair": "gray hair",
    "Wavy_Hair": "wavy hair",
    "Straight_Hair": "straight hair",
    "Wearing_Hat": "a hat",
    "Heavy_Makeup": "makeup",
    "Wearing_Lipstick": "lipstick",
    "Wearing_Earrings": "earrings",
    "Arched_Eyebrows": "arched eyebrows",
    "Bushy_Eyebrows": "bushy eyebrows",
    "Bags_Under_Eyes": "bags under the eyes",
    "Big_Lips": "full lips",
    "Big_Nose": "a large nose",
    "Pointy_Nose": "a pointed nose",
    "Narrow_Eyes": "narrow eyes",
    "High_Cheekbones": "high cheekbones",
    "Rosy_Cheeks": "rosy cheeks",
    "Pale_Skin": "pale skin",
    "Oval_Face": "an oval face",
    "Double_Chin": "a double chin",
    "Chubby": "a round face",
    "Wearing_Necklace": "a necklace",
    "Wearing_Necktie": "a necktie",
}
# Known-absent attribute -> negative phrase (the model should not add it).
_ABSENT_NEGATIONS: dict[str, str] = {
    "Eyeglasses": "eyeglasses",
    "Mustache": "mustache",
    "Bald": "bald head",
    "Wearing_Hat": "hat",
    "Heavy_Makeup": "makeup",
    "Wearing_Lipstick": "lipstick",
}
# Known-present attribute -> negative phrase (the model should not remove it).
_PRESENT_NEGATIONS: dict[str, str] = {
    "Bald": "full hair",
    "Eyeglasses": "bare eyes",
}


@dataclass
class FaceAttributes:
    """Merged attributes: gender, age in years and CelebA labels, each ``None``/absent when unknown."""

    male: bool | None = None
    age: float | None = None
    celeba: dict[str, bool] = field(default_factory=dict)  # CelebA name -> present

    @property
    def has_beard(self) -> bool | None:
        """True/False when the beard is known (No_Beard, or Goatee/Mustache present), else None."""
        if "No_Beard" in self.celeba:
            return not self.celeba["No_Beard"]
        if self.celeba.get("Goatee") or self.celeba.get("Mustache"):
            return True
        return None

    @property
    def young(self) -> bool | None:
        """True under 30 years, or CelebA Young; None when unknown."""
        if self.age is not None:
            return self.age < 30
        return self.celeba.get("Young")


@dataclass(frozen=True)
class Face2TextResult:
    """The positive sentence and the attribute-negation text (empty when nothing is known)."""

    prompt: str
    attribute_negative: str
    description: str


def _parse_gender(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)):
        return bool(value == 1)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("m", "male", "man"):
            return True
        if v in ("f", "female", "woman"):
            return False
    return None


def _parse_flag(value: object, threshold: float) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value) >= threshold
    return None


def merge_attributes(
    attributes: Mapping[str, object] | None,
    celeba_probabilities: Mapping[str, float] | None = None,
    *,
    threshold: float = 0.5,
) -> FaceAttributes:
    """Merge an attribute dict (insightface keys and/or CelebA names) with CelebA model probabilities.

    Values given explicitly in ``attributes`` win over the model's. Unknown keys are ignored.
    """
    merged = FaceAttributes()
    for source in (celeba_probabilities or {}, attributes or {}):  # later source wins
        for key, value in source.items():
            lower = key.lower()
            if lower in ("gender", "sex"):
                gender = _parse_gender(value)
                if gender is not None:
                    merged.male = gender
            elif (
                lower == "age"
                and isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, bool)
            ):
                merged.age = float(value)
            elif lower in _CELEBA_BY_LOWER:
                flag = _parse_flag(value, threshold)
                if flag is not None:
                    merged.celeba[_CELEBA_BY_LOWER[lower]] = flag
    if merged.male is None and "Male" in merged.celeba:
        merged.male = merged.celeba["Male"]
    return merged


def _age_word(attrs: FaceAttributes) -> str | None:
    if attrs.age is not None:
        if attrs.age < 18:
            return "teenage"
        if attrs.age < 30:
            return "young"
        if attrs.age < 55:
            return "middle-aged"
        return "elderly"
    young = attrs.celeba.get("Young")
    if young is None:
        return None
    return "young" if young else "mature"


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def describe(attrs: FaceAttributes, *, max_details: int = 6) -> str:
    """Noun phrase such as "a young man with a beard and eyeglasses" ("a person" when nothing is known)."""
    noun = {True: "man", False: "woman", None: "person"}[attrs.male]
    age = _age_word(attrs)
    head = f"{age} {noun}" if age else noun
    article = "an" if head[0] in "aeiou" else "a"
    details: list[str] = []
    if attrs.has_beard and not attrs.celeba.get("Goatee"):
        details.append("a beard")
    for name, phrase in _DETAIL_PHRASES.items():
        if attrs.celeba.get(name):
            details.append(phrase)
    details = details[:max_details]
    return f"{article} {head}" + (f" with {_join(details)}" if details else "")


def attribute_negation(attrs: FaceAttributes) -> str:
    """Comma-separated opposites of the known attributes, for the attribute negative stream."""
    phrases: list[str] = []
    if attrs.male is True:
        phrases.append("woman")
    elif attrs.male is False:
        phrases += ["man", "beard"]
    young = attrs.young
    if young is True:
        phrases.append("old, wrinkles")
    elif young is False:
        phrases.append("child")
    beard = attrs.has_beard
    if beard is False and attrs.male is not False:
        phrases.append("beard")
    elif beard is True:
        phrases.append("clean-shaven")
    for name, phrase in _ABSENT_NEGATIONS.items():
        if attrs.celeba.get(name) is False:
            phrases.append(phrase)
    for name, phrase in _PRESENT_NEGATIONS.items():
        if attrs.celeba.get(name) is True:
            phrases.append(phrase)
    return ", ".join(dict.fromkeys(phrases))


def face_to_text(
    attrs: FaceAttributes,
    *,
    template: str,
    user_text: str | None = None,
    user_mode: str = "extend",
    max_details: int = 6,
) -> Face2TextResult:
    """The sentence for the positive condition and the attribute-negation text."""
    description = describe(attrs, max_details=max_details)
    prompt = template.format(description=description)
    user = (user_text or "").strip()
    if user:
        prompt = user if user_mode == "override" else f"{prompt}, {user}"
    return Face2TextResult(prompt=prompt, attribute_negative=attribute_negation(attrs), description=description)


class CelebAAttributeModel:
    """A CelebA-40 attribute classifier in ONNX at a local path.

    Contract: one input (1, 3, H, W) float32 RGB, normalised with ``mean``/``std`` (ImageNet by
    default); one output (1, 40) of logits in :data:`CELEBA_ATTRIBUTES` order. H, W come from the
    model's input shape (224 where it is dynamic).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        import onnxruntime as ort

        model_path = Path(path)
        if not model_path.is_file():
            raise ConfigError(
                f"CelebA attribute model not found: {model_path}",
                field="celeba_attribute_model",
                code="weights_invalid",
            )
        try:
            self._session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ConfigError(
                f"cannot load CelebA attribute model {model_path}: {exc}",
                field="celeba_attribute_model",
                code="weights_invalid",
            ) from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ConfigError(
                f"{model_path}: expected one input and one output",
                field="celeba_attribute_model",
                code="weights_invalid",
            )
        shape = inputs[0].shape
        self._input_name = inputs[0].name
        self._size = (
            (int(shape[2]), int(shape[3]))
            if len(shape) == 4 and all(isinstance(s, int) for s in shape[2:])
            else (224, 224)
        )
        self._mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)  # (1, 3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)  # (1, 3, 1, 1)

    def predict(self, image: np.ndarray) -> dict[str, float]:
        """Probabilities of the 40 attributes for one aligned RGB uint8 face crop (H, W, 3)."""
        import cv2

        resized = cv2.resize(image, (self._size[1], self._size[0]), interpolation=cv2.INTER_AREA)
        x = resized.astype(np.float32).transpose(2, 0, 1)[None] / 255.0  # (1, 3, H, W)
        x = (x - self._mean) / self._std
        logits = np.asarray(self._session.run(None, {self._input_name: x})[0], dtype=np.float64).reshape(-1)  # (40,)
        if logits.shape[0] != len(CELEBA_ATTRIBUTES):
            raise ConfigError(
                f"CelebA attribute model returned {logits.shape[0]} values, expected 40",
                field="celeba_attribute_model",
                code="weights_invalid",
            )
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        return {name: float(p) for name, p in zip(CELEBA_ATTRIBUTES, probabilities, strict=True)}

    def predict_mean(self, images: list[np.ndarray]) -> dict[str, float]:
        """Attribute probabilities averaged over several reference crops."""
        predictions = [self.predict(image) for image in images]
        return {name: float(np.mean([p[name] for p in predictions])) for name in CELEBA_ATTRIBUTES}
