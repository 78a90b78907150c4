"""Jakarta as the demo knows it: kota and kecamatan, who runs which line, where each station
is, and what people buy (shared/domain-facts.md).

Real: the five kota administrasi and Kepulauan Seribu with their 44 kecamatan and where
each station stands (the analytics' reference data, `reconciliation.analytics.geography`,
so that the demo's city and the published tables agree), the 2020 census population of
each kota, the lines and stations (`card_reader.fares.LINES`), the operators, ISO 18245
merchant category codes.

Approximations, labelled as such:
- Within a kota, people and merchants are spread evenly over its kecamatan.
- The category mix of merchants, ticket sizes and operators' fees (MDR) are JakartaOne's
  assumptions for a plausible city, not published statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciliation.analytics.geography import KECAMATAN_BY_KOTA, REFERENCE_NETWORK

# The 2020 census population of each kota (DKI Jakarta, SP2020: 10,562,088 in all); the
# kecamatan of each kota and where each station stands are the analytics' reference data.
KOTA_POPULATION: dict[str, int] = {
    "Jakarta Pusat": 1_056_896,
    "Jakarta Utara": 1_778_981,
    "Jakarta Barat": 2_434_511,
    "Jakarta Selatan": 2_226_812,
    "Jakarta Timur": 3_037_139,
    "Kepulauan Seribu": 27_749,
}
KECAMATAN = KECAMATAN_BY_KOTA
# Station name -> (kota, kecamatan); Depok and Bogor lie outside DKI Jakarta.
STATION_PLACE: dict[str, tuple[str, str]] = {
    station.name: (station.kota, station.kecamatan)
    for line in REFERENCE_NETWORK.lines
    for station in line.stations
}


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    mcc: str
    kota: str
    kecamatan: str
    mdr_bps: int
    lines: tuple[str, ...]  # card_reader.fares line names
    code: str  # short prefix of its terminal codes


# MCC 4111 (commuter transport) for the BRT, MRT and LRT, 4112 (passenger rail) for KRL.
OPERATORS = (
    Operator("TransJakarta", "4111", "Jakarta Timur", "Cakung", 50, ("TJ-1",), "TJ"),
    Operator("MRT Jakarta", "4111", "Jakarta Pusat", "Tanah Abang", 50, ("MRT-NS",), "MRT"),
    Operator(
        "KRL Commuter Line", "4112", "Jakarta Pusat", "Sawah Besar", 50, ("KRL-BOGOR",), "KRL"
    ),
    Operator("LRT Jakarta", "4111", "Jakarta Utara", "Kelapa Gading", 50, ("LRT-JAKARTA",), "LRT"),
)


@dataclass(frozen=True, slots=True)
class Category:
    mcc: str
    label: str
    share: float  # of merchants (assumption)
    mdr_bps: int  # assumption
    ticket: tuple[int, int]  # a sale's range in rupiah, multiples of 500 (assumption)


CATEGORIES = (
    Category("5499", "Minimarket", 0.30, 70, (3_000, 60_000)),
    Category("5812", "Rumah Makan", 0.18, 100, (12_000, 80_000)),
    Category("5814", "Kedai Kopi", 0.14, 100, (10_000, 45_000)),
    Category("5411", "Pasar Swalayan", 0.09, 70, (20_000, 200_000)),
    Category("5912", "Apotek", 0.07, 80, (8_000, 120_000)),
    Category("7523", "Parkir", 0.07, 50, (2_000, 10_000)),
    Category("5541", "SPBU", 0.04, 40, (20_000, 150_000)),
    Category("5311", "Toserba", 0.04, 120, (25_000, 250_000)),
    Category("7832", "Bioskop", 0.03, 150, (35_000, 100_000)),
    Category("9399", "Layanan Publik", 0.04, 0, (5_000, 50_000)),
)
