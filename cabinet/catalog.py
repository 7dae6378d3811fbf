"""The catalog: what the cabinet sells, at what price, and what one item weighs.

`catalog.yaml` (docs/formats.md, schema `cabinet/schemas/catalog.schema.json`) is parsed with
line numbers (`cabinet.yamlsrc`), validated by a pydantic model that refuses unknown keys, then
checked across fields (one currency, unique SKUs). The result is a read-only `Catalog` of frozen
`Product`s. Prices are integers in minor units (180 = 1.80 EUR); weights are grams as floats;
`weight_tolerance_g` is two standard deviations of one item's weight around `unit_weight_g`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cabinet.errors import FormatError, FormatErrors
from cabinet.yamlsrc import Doc, load_yaml, pydantic_errors

SKU_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
COLOR_PATTERN = r"^#[0-9a-fA-F]{6}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
PHOTO_PRODUCT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$"
TAX_CLASS_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class ProductModel(BaseModel):
    """One product as written in catalog.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sku: str = Field(pattern=SKU_PATTERN, description="Stock keeping unit: lower case, digits, . _ -")
    name: str = Field(min_length=1, max_length=120)
    price: int = Field(ge=0, description="Price in minor units of the currency (180 = 1.80 EUR)")
    currency: str | None = Field(default=None, pattern=CURRENCY_PATTERN,
                                 description="Must equal the catalog currency when given")
    unit_weight_g: float = Field(gt=0, le=50000, description="Mean weight of one item, grams")
    weight_tolerance_g: float = Field(gt=0, le=5000,
                                      description="Two standard deviations of one item's weight")
    images: list[str] = Field(default_factory=list,
                              description="Product photos, relative to the data root")
    age_restricted: bool = False
    tax_class: str | None = Field(
        default=None, pattern=TAX_CLASS_PATTERN,
        description="The product's tax class (e.g. standard, reduced, alcohol); the "
                    "configuration's tax section maps classes to rates")
    color: str | None = Field(default=None, pattern=COLOR_PATTERN,
                              description="#rrggbb used by the shelf renderer")
    package: Literal["carton", "can", "bottle", "tub"] | None = Field(
        default=None, description="Shape the shelf renderer draws; default derived from the SKU")
    photo_product: str | None = Field(
        default=None, pattern=PHOTO_PRODUCT_PATTERN,
        description="Product photo folder under products/grocery of the data root, and the "
                    "product name the recognizer answers for this SKU (e.g. Arla-Standard-Milk)")

    @field_validator("price", mode="before")
    @classmethod
    def _price_in_minor_units(cls, v: Any) -> Any:
        if isinstance(v, float):
            raise ValueError(f"price is an integer in minor units: write {round(v * 100)} "
                             f"for {v:.2f}")
        return v

    @field_validator("unit_weight_g", "weight_tolerance_g", mode="before")
    @classmethod
    def _int_grams_ok(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class CatalogModel(BaseModel):
    """The whole catalog.yaml file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    schema_version: int = Field(default=1, ge=1, le=1)
    currency: str = Field(pattern=CURRENCY_PATTERN, description="ISO 4217 code, e.g. EUR")
    products: list[ProductModel] = Field(min_length=1)


@dataclasses.dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: int
    currency: str
    unit_weight_g: float
    weight_tolerance_g: float
    images: tuple[str, ...] = ()
    age_restricted: bool = False
    color: str | None = None
    package: str | None = None
    photo_product: str | None = None
    tax_class: str | None = None

    @property
    def weight_sigma_g(self) -> float:
        """One standard deviation of one item's weight."""
        return self.weight_tolerance_g / 2.0


class Catalog(Mapping[str, Product]):
    """SKU -> Product, in file order; `.currency` is the one currency of every price."""

    def __init__(self, products: Mapping[str, Product] | list[Product], currency: str,
                 path: Path | None = None, lines: Mapping[str, int] | None = None):
        items = products.values() if isinstance(products, Mapping) else products
        self._products: dict[str, Product] = {p.sku: p for p in items}
        self.currency = currency
        self.path = path
        self._lines = dict(lines or {})

    def __getitem__(self, sku: str) -> Product:
        return self._products[sku]

    def __iter__(self) -> Iterator[str]:
        return iter(self._products)

    def __len__(self) -> int:
        return len(self._products)

    def __repr__(self) -> str:
        return f"Catalog({len(self)} products, {self.currency})"

    def line_of(self, sku: str) -> int | None:
        return self._lines.get(sku)

    def to_dict(self) -> dict[str, Any]:
        """The YAML-shaped dict (round-trips through `catalog_from_doc`)."""
        out = []
        for p in self._products.values():
            d = dataclasses.asdict(p)
            d["images"] = list(p.images)
            d.pop("currency")
            for optional in ("color", "package", "photo_product", "tax_class"):
                if d[optional] is None:
                    d.pop(optional)
            out.append(d)
        return {"schema_version": 1, "currency": self.currency, "products": out}


# --- cross-field checks: each a named function returning the errors it finds ----------------

def check_unique_skus(doc: Doc, model: CatalogModel) -> list[FormatError]:
    seen: dict[str, int] = {}
    errors = []
    for i, p in enumerate(model.products):
        if p.sku in seen:
            errors.append(doc.error(("products", i, "sku"),
                                    f"duplicate SKU (first at line "
                                    f"{doc.line(('products', seen[p.sku]))}); SKUs are unique"))
        else:
            seen[p.sku] = i
    return errors


def check_one_currency(doc: Doc, model: CatalogModel) -> list[FormatError]:
    return [doc.error(("products", i, "currency"),
                      f"differs from the catalog currency {model.currency}; one catalog sells "
                      f"in one currency")
            for i, p in enumerate(model.products)
            if p.currency is not None and p.currency != model.currency]


def check_tolerance_below_weight(doc: Doc, model: CatalogModel) -> list[FormatError]:
    return [doc.error(("products", i, "weight_tolerance_g"),
                      f"tolerance must be smaller than the unit weight ({p.unit_weight_g} g)")
            for i, p in enumerate(model.products) if p.weight_tolerance_g >= p.unit_weight_g]


def check_unique_photo_products(doc: Doc, model: CatalogModel) -> list[FormatError]:
    seen: dict[str, str] = {}
    errors = []
    for i, p in enumerate(model.products):
        if p.photo_product is None:
            continue
        if p.photo_product in seen:
            errors.append(doc.error(("products", i, "photo_product"),
                                    f"already names SKU {seen[p.photo_product]!r}; the recognizer "
                                    f"answers product names, so each names one SKU"))
        else:
            seen[p.photo_product] = p.sku
    return errors


CROSS_CHECKS = (check_unique_skus, check_one_currency, check_tolerance_below_weight,
                check_unique_photo_products)


def catalog_from_doc(doc: Doc) -> Catalog:
    """Validate a parsed catalog file; raises the first FormatError (one line)."""
    if not isinstance(doc.data, dict):
        raise doc.error((), "a catalog is a mapping with `currency:` and `products:`",
                        with_value=False)
    try:
        model = CatalogModel.model_validate(doc.data)
    except ValidationError as e:
        raise FormatErrors(pydantic_errors(doc, e)).first from None
    errors = [err for check in CROSS_CHECKS for err in check(doc, model)]
    if errors:
        raise FormatErrors(errors).first
    products = [Product(sku=p.sku, name=p.name, price=p.price, currency=model.currency,
                        unit_weight_g=p.unit_weight_g, weight_tolerance_g=p.weight_tolerance_g,
                        images=tuple(p.images), age_restricted=p.age_restricted, color=p.color,
                        package=p.package, photo_product=p.photo_product,
                        tax_class=p.tax_class)
                for p in model.products]
    lines = {p.sku: doc.line(("products", i)) for i, p in enumerate(model.products)}
    return Catalog(products, model.currency, path=doc.path, lines=lines)


def sku_by_photo_product(catalog: Catalog) -> dict[str, str]:
    """Recognizer answer -> SKU, for vision.diff's `sku_of`: each photo_product names its SKU,
    and each SKU names itself (a SKU enrolled with `cabinet vision enroll` is answered by its
    SKU). Two SKUs naming one product would make an answer ambiguous:
    check_unique_photo_products refuses that when the file is read."""
    out = {sku: sku for sku in catalog}
    out.update({p.photo_product: sku for sku, p in catalog.items() if p.photo_product})
    return out


def tax_classes(catalog: Catalog) -> dict[str, str]:
    """SKU -> tax class of every product that has one (billing.tax.TaxSetup's class_of)."""
    return {sku: p.tax_class for sku, p in catalog.items() if p.tax_class}


def load_catalog(path: str | Path) -> Catalog:
    """Read catalog.yaml; any problem is a one-line FormatError naming file and line."""
    return catalog_from_doc(load_yaml(path, "catalog"))


def catalog_errors(doc: Doc) -> list[FormatError]:
    """Every error of a parsed catalog at once, in line order (empty: it is valid).

    `cabinet catalog validate` prints them all; `catalog_from_doc` stops at the first."""
    if not isinstance(doc.data, dict):
        return [doc.error((), "a catalog is a mapping with `currency:` and `products:`",
                          with_value=False)]
    try:
        model = CatalogModel.model_validate(doc.data)
    except ValidationError as e:
        return list(FormatErrors(pydantic_errors(doc, e)).errors)
    errors = [err for check in CROSS_CHECKS for err in check(doc, model)]
    return list(FormatErrors(errors).errors) if errors else []
