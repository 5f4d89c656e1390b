"""Where an application's repository declares an image, and the edit that sets it back.

What a repository path holds decides where an image is declared (docs/gitops.md):

1. a **kustomization** (``kustomization.yaml``, ``.yml`` or ``Kustomization`` at the path):
   an ``images:`` entry whose ``name`` (or ``newName``) and ``newTag`` (or ``digest``) render
   the image; the edit sets ``newTag`` (or ``digest``), and ``newName`` where the name changes;
2. a **Helm chart or values** (``Chart.yaml`` or ``values*.yaml`` at the path): a mapping
   ``image:`` with ``repository`` (plus ``registry`` where set) and ``tag`` (or ``digest``);
   the edit sets the tag (and the repository where the name changes);
3. a YAML file under the path naming the image literally as a value (``image: app:1.4.2``).

Edits replace the scalar where YAML's own parser says it stands (node marks), so comments,
order and quoting of everything else are kept. Rendering, for the watch, applies a
kustomization's ``images:`` to the Deployments under the path (what ``kustomize build`` does
with them); a chart's templates are not rendered: its values declare its image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
LOOKED_FOR = (
    "a kustomization.yaml `images:` entry (name or newName with newTag or digest), a Helm "
    "values file's image.repository/image.tag (values*.yaml at the path), and YAML naming it "
    "as a value (`image: {image}`)"
)


@dataclass(frozen=True)
class Ref:
    """An image reference split as kustomize and Helm split it."""

    name: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, image: str) -> Ref:
        name, _, digest = image.partition("@")
        tag = None
        slash, colon = name.rfind("/"), name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        return cls(name, tag, digest or None)

    def text(self) -> str:
        return (
            self.name
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` with ``new``."""

    start: int
    end: int
    new: str


def apply(text: str, edits: list[Edit]) -> str:
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: edit.start] + edit.new + text[edit.end :]
    return text


def _scalar(node: yaml.Node, value: str) -> str:
    """``value`` written as ``node`` was (quoted alike), or double-quoted where plain YAML
    would read it as something else than this string (``1.5`` is a float)."""
    style = getattr(node, "style", None)
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"' or yaml.safe_load(value) != value or ": " in value or " #" in value:
        return json.dumps(value)
    return value


def _pairs(node: yaml.Node) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        str(key.value): (key, value)
        for key, value in node.value
        if isinstance(key, yaml.ScalarNode)
    }


def _value(pairs: dict[str, tuple[yaml.Node, yaml.Node]], key: str) -> str | None:
    found = pairs.get(key)
    if found is None or not isinstance(found[1], yaml.ScalarNode):
        return None
    return str(found[1].value)


def _documents(text: str) -> list[yaml.Node]:
    try:
        return [doc for doc in yaml.compose_all(text) if doc is not None]
    except yaml.YAMLError:
        return []


def _set(
    text: str, pairs: dict[str, tuple[yaml.Node, yaml.Node]], key: str, value: str, *, after: str
) -> Edit:
    """Replace ``key``'s scalar, or insert ``key: value`` on a line after ``after``'s."""
    if key in pairs:
        node = pairs[key][1]
        return Edit(node.start_mark.index, node.end_mark.index, _scalar(node, value))
    anchor_key, anchor_value = pairs[after]
    end = anchor_value.end_mark.index
    indent = " " * anchor_key.start_mark.column
    return Edit(end, end, f"\n{indent}{key}: {_scalar(yaml.ScalarNode('', ''), value)}")


def _pins(old: Ref, tag: str | None, digest: str | None) -> bool:
    """A declaration of ``tag`` / ``digest`` renders ``old``'s (a digest wins over a tag)."""
    if old.digest:
        return digest == old.digest
    return old.tag is not None and digest is None and tag == old.tag


class Unsupported(ValueError):
    """The declaration was found but cannot be rewritten safely; the message says why."""


def kustomize_edits(text: str, old: Ref, new: Ref) -> tuple[list[Edit], str] | None:
    """The edits to a kustomization's ``images:`` entry that renders ``old``, and where it
    is in words; None when no entry renders it."""
    for doc in _documents(text):
        images = _pairs(doc).get("images")
        if images is None or not isinstance(images[1], yaml.SequenceNode):
            continue
        for entry in images[1].value:
            pairs = _pairs(entry)
            name = _value(pairs, "name")
            if name is None:
                continue
            rendered = _value(pairs, "newName") or name
            tag, digest = _value(pairs, "newTag"), _value(pairs, "digest")
            if rendered != old.name:
                continue
            if not (
                (old.digest and digest == old.digest) or (old.tag and not digest and tag == old.tag)
            ):
                continue
            if bool(new.digest) != bool(old.digest):
                raise Unsupported(
                    f"the `images:` entry `{name}` pins {old.text()} by "
                    f"{'digest' if old.digest else 'tag'} and the release to return to, "
                    f"{new.text()}, is not pinned alike: not rewritten"
                )
            edits = []
            if new.digest:
                edits.append(_set(text, pairs, "digest", new.digest, after="name"))
                what = "digest"
            else:
                edits.append(_set(text, pairs, "newTag", new.tag or "latest", after="name"))
                what = "newTag"
            if new.name != rendered:
                edits.append(_set(text, pairs, "newName", new.name, after="name"))
                what += " and newName"
            return edits, f"`images:` entry `{name}` ({what})"
    return None


def _image_maps(
    node: yaml.Node, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], dict[str, tuple[yaml.Node, yaml.Node]]]]:
    """Every ``image:`` mapping in a values document, with its key path."""
    found = []
    for key, (_, value) in _pairs(node).items():
        if key == "image" and isinstance(value, yaml.MappingNode):
            found.append(((*path, key), _pairs(value)))
        elif isinstance(value, yaml.MappingNode):
            found.extend(_image_maps(value, (*path, key)))
    return found


def helm_edits(text: str, old: Ref, new: Ref) -> tuple[list[Edit], str] | None:
    """The edits to a Helm values file's ``image:`` mapping that declares ``old``."""
    for doc in _documents(text):
        for where, pairs in _image_maps(doc):
            repository, registry = _value(pairs, "repository"), _value(pairs, "registry")
            if repository is None:
                continue
            name = f"{registry}/{repository}" if registry else repository
            tag, digest = _value(pairs, "tag"), _value(pairs, "digest")
            if name != old.name:
                continue
            if not (
                (old.digest and digest == old.digest) or (old.tag and not digest and tag == old.tag)
            ):
                continue
            dotted = ".".join(where)
            if bool(new.digest) != bool(old.digest):
                raise Unsupported(
                    f"{dotted} pins {old.text()} by {'digest' if old.digest else 'tag'} and the "
                    f"release to return to, {new.text()}, is not pinned alike: not rewritten"
                )
            edits = []
            key = "digest" if new.digest else "tag"
            edits.append(_set(text, pairs, key, new.digest or new.tag or "", after="repository"))
            what = [f"{dotted}.{key}"]
            if new.name != name:
                if registry and new.name.startswith(f"{registry}/"):
                    new_repository = new.name[len(registry) + 1 :]
                elif registry:
                    new_registry, _, new_repository = new.name.partition("/")
                    edits.append(_set(text, pairs, "registry", new_registry, after="repository"))
                    what.append(f"{dotted}.registry")
                else:
                    new_repository = new.name
                edits.append(_set(text, pairs, "repository", new_repository, after="repository"))
                what.append(f"{dotted}.repository")
            return edits, " and ".join(what)
    return None


def literal_edits(text: str, old: str, new: str) -> str:
    """Replace an image reference where it stands as a whole value (``image: old``), so
    ``app:1.4.2`` does not also rewrite ``app:1.4.20``."""
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        stripped = body.rstrip()
        for quote in ("", '"', "'"):
            if stripped.endswith(f"{quote}{old}{quote}") and (
                stripped[: -len(f"{quote}{old}{quote}")].rstrip().endswith((":", "-"))
            ):
                body = stripped[: -len(f"{quote}{old}{quote}")] + f"{quote}{new}{quote}"
                break
        lines.append(body + ending)
    return "".join(lines)


def _is_yaml(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or PurePosixPath(name).name == "Kustomization"


def _at_root(files: dict[str, str], names: tuple[str, ...]) -> list[str]:
    """The files of those names at the application's path itself (not in a subdirectory)."""
    return [name for name in sorted(files) if name in names]


def _values_files(files: dict[str, str]) -> list[str]:
    """``values.yaml`` first, then other ``values*.yaml``, where the path holds a chart or
    values."""
    found = [
        n
        for n in sorted(files)
        if "/" not in n and n.startswith("values") and n.endswith((".yaml", ".yml"))
    ]
    return sorted(found, key=lambda n: (n not in {"values.yaml", "values.yml"}, n))


def revert(files: dict[str, str], images: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Set each image ``old → new`` where the files (path relative to the application's
    path → text) declare it (module docstring). Returns the changed files' new texts and,
    per old image, where it was declared; an old image absent from the second was found
    nowhere. Raises ``Unsupported`` for a declaration it will not rewrite."""
    texts = dict(files)
    changed: dict[str, str] = {}
    sites: dict[str, str] = {}
    kustomizations = _at_root(texts, KUSTOMIZATIONS)
    values = _values_files(texts)
    for old, new in sorted(images.items()):
        old_ref, new_ref = Ref.parse(old), Ref.parse(new)
        for name in kustomizations:
            found = kustomize_edits(texts[name], old_ref, new_ref)
            if found is not None:
                texts[name] = changed[name] = apply(texts[name], found[0])
                sites[old] = f"{name}: {found[1]}"
                break
        if old in sites:
            continue
        for name in values:
            found = helm_edits(texts[name], old_ref, new_ref)
            if found is not None:
                texts[name] = changed[name] = apply(texts[name], found[0])
                sites[old] = f"{name}: {found[1]}"
                break
        if old in sites:
            continue
        for name in sorted(texts):
            if not _is_yaml(name):
                continue
            text = literal_edits(texts[name], old, new)
            if text != texts[name]:
                texts[name] = changed[name] = text
                sites.setdefault(old, f"{name}: the image as a value")
    return changed, sites


def deployment_images(text: str) -> dict[str, dict[str, str]]:
    """Deployment name → container → image, from one file's YAML documents."""
    found: dict[str, dict[str, str]] = {}
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return found
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue
        template = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        found[str((doc.get("metadata") or {}).get("name"))] = {
            str(c.get("name")): str(c.get("image"))
            for c in template.get("containers") or []
            if c.get("image")
        }
    return found


def _kustomize_image(image: str, entries: list[dict[str, str | None]]) -> str:
    """What kustomize's images transformer makes of ``image`` (the first entry naming it)."""
    ref = Ref.parse(image)
    for entry in entries:
        if entry["name"] != ref.name:
            continue
        name = entry["newName"] or ref.name
        if entry["digest"]:
            return f"{name}@{entry['digest']}"
        if entry["newTag"] is not None:
            return f"{name}:{entry['newTag']}"
        return Ref(name, ref.tag, ref.digest).text()
    return image


def rendered(files: dict[str, str]) -> dict[str, dict[str, str]]:
    """Deployment name → container → image that the files render: the Deployments' images,
    with a kustomization's ``images:`` applied (its scalars as written: ``1.10`` stays)."""
    entries: list[dict[str, str | None]] = []
    for name in _at_root(files, KUSTOMIZATIONS):
        for doc in _documents(files[name]):
            images = _pairs(doc).get("images")
            if images is None or not isinstance(images[1], yaml.SequenceNode):
                continue
            for entry in images[1].value:
                pairs = _pairs(entry)
                entries.append(
                    {k: _value(pairs, k) for k in ("name", "newName", "newTag", "digest")}
                )
    found: dict[str, dict[str, str]] = {}
    for name in sorted(files):
        if _is_yaml(name) and PurePosixPath(name).name not in KUSTOMIZATIONS:
            found.update(deployment_images(files[name]))
    return {
        deployment: {c: _kustomize_image(i, entries) for c, i in containers.items()}
        for deployment, containers in found.items()
    }


def declared(files: dict[str, str]) -> set[str]:
    """The images a chart's values files declare (``image:`` mappings)."""
    out: set[str] = set()
    for name in _values_files(files):
        for doc in _documents(files[name]):
            for _, pairs in _image_maps(doc):
                repository, registry = _value(pairs, "repository"), _value(pairs, "registry")
                if repository is None:
                    continue
                ref = Ref(
                    f"{registry}/{repository}" if registry else repository,
                    _value(pairs, "tag"),
                    _value(pairs, "digest"),
                )
                out.add(ref.text() if not ref.digest else f"{ref.name}@{ref.digest}")
    return out


def is_chart(files: dict[str, str]) -> bool:
    """A Helm chart: its templates are not rendered here, its values declare its images."""
    return "Chart.yaml" in files


def renders(files: dict[str, str], deployment: str, images: dict[str, str]) -> bool:
    """Whether the files render ``images`` (container → image) for ``deployment``: its
    manifest (a kustomization's ``images:`` applied) where the files hold it, else a chart's
    or values file's declared images."""
    found = None if is_chart(files) else rendered(files).get(deployment)
    if found is not None:
        return all(found.get(c) == i for c, i in images.items())
    return bool(images) and set(images.values()) <= declared(files)
