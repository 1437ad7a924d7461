"""The component registry: publishing recipes with their artifacts, listing them, and artifact access."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from roost.hub import contract, desired
from roost.hub.artifacts import StagedFile, Staging, digest_b64
from roost.hub.contract import PrincipalKind
from roost.hub.errors import (
    AuthenticationError,
    ForbiddenError,
    HubConflictError,
    HubError,
    HubNotFoundError,
    UnprocessableError,
)
from roost.hub.models import ArtifactFile, Component, ComponentValidation
from roost.hub.names import check_artifact_path, check_file_name, check_name
from roost.hub.store.base import StoreBase, _one
from roost.hub.store.records import ArtifactLocation, Principal
from roost.recipe import RecipeError, parse_recipe, recipe_to_dict

logger = logging.getLogger(__name__)


#: Artifacts up to this size are read whole when a device's access is checked and served from memory
#: (streaming a file costs several worker-thread hops; a rollout of a small component to 10,000
#: devices is dominated by them). Larger ones stream from disk.
INLINE_ARTIFACT_BYTES = 64 * 1024


class RegistryStore(StoreBase):
    """Components (recipes, immutable versions) and where their artifacts are for a reader."""

    # -- components --------------------------------------------------------------------------------

    def publish_component(self, recipe_text: bytes, staging: Staging, files: list[StagedFile],
                          recipe_source: str = "recipe") -> contract.Component:
        """Register a recipe and its artifact folder: every uploaded file, under its relative path.

        Each file an artifact URI names (its last path segment) must be among the uploaded ones, at the
        top of the folder (``ARTIFACT_MISSING``); the others are stored as they are, as a local
        deployment brings the whole ``NAME/VERSION/`` folder. The stored recipe carries the
        hub-computed ``Digest`` (base64 SHA-256) of every recipe-listed artifact. Versions are
        immutable (``VERSION_EXISTS``). ``staging`` is installed or left for the caller to clean up.
        """
        try:
            recipe = parse_recipe(recipe_text, source=recipe_source)
        except RecipeError as err:
            raise UnprocessableError(str(err), code="RECIPE_INVALID") from err
        check_name(recipe.name, "component name")
        check_name(recipe.version, "component version")
        by_name: dict[str, StagedFile] = {}
        for staged in files:
            if staged.file_name in by_name:
                raise UnprocessableError(f"artifact {staged.file_name} was uploaded twice", code="ARTIFACT_DUPLICATE")
            by_name[staged.file_name] = staged
        document = recipe_to_dict(recipe)
        needed: set[str] = set()
        for manifest, raw_manifest in zip(recipe.manifests, document.get("Manifests", []), strict=True):
            for artifact, raw in zip(manifest.artifacts, raw_manifest.get("Artifacts", []), strict=True):
                if artifact.scheme == "docker":
                    continue
                file_name = check_file_name(artifact.file_name)
                needed.add(file_name)
                uploaded = by_name.get(file_name)
                if uploaded is None:
                    continue
                given = raw.get("Digest")
                digest = digest_b64(uploaded.sha256)
                if given and given != digest and given.lower() != uploaded.sha256:
                    raise UnprocessableError(
                        f"artifact {file_name}: the recipe's Digest {given} does not match the uploaded file "
                        f"({digest})", code="ARTIFACT_DIGEST_MISMATCH")
                raw["Digest"] = digest
                raw["Algorithm"] = "SHA-256"
        missing = sorted(needed - by_name.keys())
        if missing:
            raise UnprocessableError(f"{recipe.name} {recipe.version}: no file uploaded for artifact(s) "
                                     f"{', '.join(missing)} named by the recipe's URIs", code="ARTIFACT_MISSING")
        now = self.clock()
        exists = HubConflictError(f"component {recipe.name} version {recipe.version} is already published; "
                                  "versions are immutable, publish a new version", code="VERSION_EXISTS")

        def run(s: Session) -> contract.Component:
            if s.get(Component, (recipe.name, recipe.version)) is not None:
                raise exists
            s.add(Component(name=recipe.name, version=recipe.version, recipe=document, created_at=now))
            try:
                s.flush()
            except IntegrityError as err:
                raise exists from err
            for staged in by_name.values():
                s.add(ArtifactFile(name=recipe.name, version=recipe.version, file_name=staged.file_name,
                                   sha256=staged.sha256, size=staged.size))
            s.flush()
            self.artifacts.install(staging, recipe.name, recipe.version, list(by_name.values()))
            return contract.Component(name=recipe.name, version=recipe.version, created_at=now,
                                 artifacts=[contract.Artifact(file=f.file_name, sha256=f.sha256, size=f.size)
                                            for f in sorted(by_name.values(), key=lambda f: f.file_name)])
        try:
            info = self._write(run)
        except IntegrityError as err:
            raise exists from err
        logger.info("published %s %s (%d artifacts)", recipe.name, recipe.version, len(by_name))
        return info

    def _artifact_infos(self, s: Session) -> dict[tuple[str, str], list[contract.Artifact]]:
        out: dict[tuple[str, str], list[contract.Artifact]] = {}
        for a in s.scalars(select(ArtifactFile).order_by(ArtifactFile.file_name)):
            out.setdefault((a.name, a.version), []).append(
                contract.Artifact(file=a.file_name, sha256=a.sha256, size=a.size))
        return out

    def list_components(self) -> list[contract.Component]:
        def run(s: Session) -> list[contract.Component]:
            artifacts = self._artifact_infos(s)
            reports = {(r.name, r.version): contract.ModelValidation.model_validate(r.report)
                       for r in s.scalars(select(ComponentValidation))}
            rows = s.execute(select(Component.name, Component.version, Component.created_at)
                             .order_by(Component.name, Component.created_at))
            return [contract.Component(name=n, version=v, created_at=c, artifacts=artifacts.get((n, v), []),
                                       validation=reports.get((n, v))) for n, v, c in rows]
        return self._read(run)

    def component_versions(self, name: str) -> list[str]:
        """Every published version of ``name`` (any order; [] when none)."""
        check_name(name, "component name")
        return self._read(lambda s: [str(v) for v in s.scalars(
            select(Component.version).where(Component.name == name))])

    def get_component(self, name: str, version: str) -> contract.Component:
        check_name(name, "component name")
        check_name(version, "component version")

        def run(s: Session) -> contract.Component:
            comp = s.get(Component, (name, version))
            if comp is None:
                raise HubNotFoundError(f"component {name} version {version} is not published",
                                       code="COMPONENT_NOT_FOUND")
            artifacts = [contract.Artifact(file=a.file_name, sha256=a.sha256, size=a.size) for a in s.scalars(
                select(ArtifactFile).where(ArtifactFile.name == name, ArtifactFile.version == version)
                .order_by(ArtifactFile.file_name))]
            validation = s.get(ComponentValidation, (name, version))
            return contract.Component(name=name, version=version, created_at=comp.created_at, artifacts=artifacts,
                                      recipe=comp.recipe, validation=None if validation is None else
                                      contract.ModelValidation.model_validate(validation.report))
        return self._read(run)

    # -- artifacts ---------------------------------------------------------------------------------

    def artifacts_for_devices(self, requests: Sequence[tuple[int, str, str, str]],
                              ) -> list[ArtifactLocation | HubError]:
        """Per ``(device_id, name, version, file)``: where the artifact is, if that device may read
        it (it is in the device's desired state). One read for all the requests."""
        checked: list[tuple[int, str, str, str] | HubError] = []
        for device_id, name, version, file_name in requests:
            try:
                checked.append((device_id, check_name(name, "component name"), check_name(version, "component version"),
                                check_artifact_path(file_name)))
            except HubError as err:
                checked.append(err)

        def run(s: Session) -> tuple[dict[int, desired.DeviceRef], dict[int, dict[str, str]],
                                     dict[tuple[str, str, str], tuple[str, int]]]:
            refs = desired.device_refs(s, [c[0] for c in checked if not isinstance(c, HubError)])
            wanted = desired.wanted_versions_many(s, list(refs.values()))
            keys = sorted({c[1:] for c in checked if not isinstance(c, HubError)
                           and c[0] in refs and wanted[c[0]].get(c[1]) == c[2]})
            rows: dict[tuple[str, str, str], tuple[str, int]] = {}
            for start in range(0, len(keys), desired.CHUNK):
                key = tuple_(ArtifactFile.name, ArtifactFile.version, ArtifactFile.file_name)
                for n, v, f, sha, size in s.execute(
                        select(ArtifactFile.name, ArtifactFile.version, ArtifactFile.file_name, ArtifactFile.sha256,
                               ArtifactFile.size).where(key.in_(keys[start:start + desired.CHUNK]))):
                    rows[(str(n), str(v), str(f))] = (str(sha), int(size))
            return refs, wanted, rows
        refs, wanted, rows = self._read(run)
        out: list[ArtifactLocation | HubError] = []
        for c in checked:
            if isinstance(c, HubError):
                out.append(c)
                continue
            device_id, name, version, file_name = c
            if device_id not in refs:
                out.append(AuthenticationError("this device was revoked; enrol it again", code="DEVICE_REVOKED"))
            elif wanted[device_id].get(name) != version:
                out.append(ForbiddenError(f"component {name} {version} is not in this device's desired state",
                                          code="ARTIFACT_FORBIDDEN"))
            else:
                out.append(self._artifact_location(rows.get((name, version, file_name)), name, version, file_name,
                                                   inline=True))
        return out

    def _artifact_location(self, row: tuple[str, int] | None, name: str, version: str,
                           file_name: str, *, inline: bool = False) -> ArtifactLocation | HubError:
        if row is None:
            return HubNotFoundError(f"artifact {name}/{version}/{file_name} does not exist", code="ARTIFACT_NOT_FOUND")
        try:
            path = self.artifacts.existing(name, version, file_name)
            content = path.read_bytes() if inline and row[1] <= INLINE_ARTIFACT_BYTES else None
        except HubError as err:
            return err
        except OSError as err:
            return HubNotFoundError(f"artifact {name}/{version}/{file_name} cannot be read: {err.strerror}",
                                    code="ARTIFACT_NOT_FOUND")
        return ArtifactLocation(path=str(path), sha256=row[0], size=row[1], file_name=file_name, content=content)

    def artifact(self, principal: Principal, name: str, version: str, file_name: str) -> ArtifactLocation:
        """Where an artifact is, if ``principal`` may read it (admins: all; devices: their desired state)."""
        if principal.kind == PrincipalKind.DEVICE:
            return _one(self.artifacts_for_devices([(principal.id, name, version, file_name)]))
        check_name(name, "component name")
        check_name(version, "component version")
        check_artifact_path(file_name)
        row = self._read(lambda s: s.execute(select(ArtifactFile.sha256, ArtifactFile.size).where(
            ArtifactFile.name == name, ArtifactFile.version == version, ArtifactFile.file_name == file_name)).first())
        return _one([self._artifact_location(None if row is None else (str(row[0]), int(row[1])),
                                             name, version, file_name)])
