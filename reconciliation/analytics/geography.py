"""The public reference data the release is keyed on: districts, lines, stations, MCC groups.

Every row of every published table is keyed by values from this module (or from a network
passed in the release config), never by a string taken from the data. That is what makes the
cell keys public: the set of rows is the same whatever the day held, so a row's existence
says nothing about anyone, and no input string (a merchant's name, a hostile value in a
station field) can reach a published file. Input values outside the reference are counted
under the explicit keys OTHER, UNKNOWN and OUTSIDE_DKI.

Sources: BPS/DKI administrative lists (5 kota administrasi, 1 kabupaten, 44 kecamatan);
the operators' published line diagrams for station order. Station positions along each
line (km) and coordinates are approximate (to a few hundred metres) and are labelled so;
they are used only to infer BRT destinations and BRT ride distances.
"""

from __future__ import annotations

from dataclasses import dataclass

OTHER = "(other)"
UNKNOWN = "(unknown)"
OUTSIDE_DKI = "(outside DKI Jakarta)"

MODES = ("TJ", "MRT", "KRL", "LRT")
MODE_NAMES = {
    "TJ": "TransJakarta (BRT)",
    "MRT": "MRT Jakarta",
    "KRL": "KRL Commuter Line",
    "LRT": "LRT Jakarta",
}
RAIL_MODES = ("MRT", "KRL", "LRT")  # tap in and tap out
BRT_MODES = ("TJ",)  # tap in only (flat fare)

# DKI Jakarta: kota administrasi (and the one kabupaten) with their kecamatan.
KECAMATAN_BY_KOTA: dict[str, tuple[str, ...]] = {
    "Jakarta Pusat": (
        "Gambir",
        "Sawah Besar",
        "Kemayoran",
        "Senen",
        "Cempaka Putih",
        "Menteng",
        "Tanah Abang",
        "Johar Baru",
    ),
    "Jakarta Utara": (
        "Penjaringan",
        "Pademangan",
        "Tanjung Priok",
        "Koja",
        "Kelapa Gading",
        "Cilincing",
    ),
    "Jakarta Barat": (
        "Cengkareng",
        "Grogol Petamburan",
        "Taman Sari",
        "Tambora",
        "Kebon Jeruk",
        "Kalideres",
        "Palmerah",
        "Kembangan",
    ),
    "Jakarta Selatan": (
        "Tebet",
        "Setiabudi",
        "Mampang Prapatan",
        "Pasar Minggu",
        "Kebayoran Lama",
        "Cilandak",
        "Kebayoran Baru",
        "Pancoran",
        "Jagakarsa",
        "Pesanggrahan",
    ),
    "Jakarta Timur": (
        "Matraman",
        "Pulo Gadung",
        "Jatinegara",
        "Kramat Jati",
        "Pasar Rebo",
        "Cakung",
        "Duren Sawit",
        "Makasar",
        "Ciracas",
        "Cipayung",
    ),
    "Kepulauan Seribu": ("Kepulauan Seribu Utara", "Kepulauan Seribu Selatan"),
}
KOTA = tuple(KECAMATAN_BY_KOTA)


def kota_keys() -> tuple[str, ...]:
    """Every kota key a district table publishes, in a fixed order."""
    return (*KOTA, OUTSIDE_DKI, UNKNOWN)


def kecamatan_keys() -> tuple[tuple[str, str], ...]:
    """Every (kota, kecamatan) key, in a fixed order: the 44 kecamatan, then the catch-alls."""
    keys: list[tuple[str, str]] = []
    for kota, kecamatans in KECAMATAN_BY_KOTA.items():
        keys.extend((kota, k) for k in kecamatans)
        keys.append((kota, UNKNOWN))
    keys.append((OUTSIDE_DKI, OUTSIDE_DKI))
    keys.append((UNKNOWN, UNKNOWN))
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class Station:
    """One stop of a line.

    Constraints: `km` grows along the line (approximate); `lat`/`lon` are WGS84 degrees
    (approximate); `kota`/`kecamatan` come from KECAMATAN_BY_KOTA, or kota is a city outside
    DKI Jakarta (then kecamatan is OUTSIDE_DKI).
    """

    name: str
    km: float
    lat: float
    lon: float
    kota: str
    kecamatan: str


@dataclass(frozen=True, slots=True)
class Line:
    mode: str
    name: str
    stations: tuple[Station, ...]


@dataclass(frozen=True, slots=True)
class Network:
    """The lines the release publishes; their stations are its public station keys."""

    lines: tuple[Line, ...]

    def line_keys(self) -> tuple[tuple[str, str], ...]:
        """(mode, line) keys in a fixed order, with a catch-all line per mode."""
        keys: list[tuple[str, str]] = []
        for mode in MODES:
            keys.extend((ln.mode, ln.name) for ln in self.lines if ln.mode == mode)
            keys.append((mode, OTHER))
        return tuple(keys)

    def station_keys(self) -> tuple[tuple[str, str, str], ...]:
        """(mode, line, station) keys: each line's stations in order, then OTHER."""
        keys: list[tuple[str, str, str]] = []
        for mode, line in self.line_keys():
            keys.extend((mode, line, s.name) for s in self.stations_of(mode, line))
            keys.append((mode, line, OTHER))
        return tuple(keys)

    def stations_of(self, mode: str, line: str) -> tuple[Station, ...]:
        for ln in self.lines:
            if ln.mode == mode and ln.name == line:
                return ln.stations
        return ()

    def od_keys(self, mode: str) -> tuple[str, ...]:
        """Station keys of one mode for its origin-destination matrix (names are unique
        within a mode), then OTHER and UNKNOWN."""
        names: list[str] = []
        for ln in self.lines:
            if ln.mode == mode:
                names.extend(s.name for s in ln.stations if s.name not in names)
        return (*names, OTHER, UNKNOWN)


def _line(mode: str, name: str, stops: list[tuple[str, float, float, float, str, str]]) -> Line:
    return Line(mode, name, tuple(Station(*s) for s in stops))


_JS, _JP, _JT, _JU, _JB = (
    "Jakarta Selatan",
    "Jakarta Pusat",
    "Jakarta Timur",
    "Jakarta Utara",
    "Jakarta Barat",
)

# The lines named in the domain facts, plus LRT Jakarta's line 1. Positions approximate.
REFERENCE_NETWORK = Network(
    (
        _line(
            "MRT",
            "North-South",
            [
                ("Lebak Bulus", 0.0, -6.2894, 106.7740, _JS, "Cilandak"),
                ("Fatmawati", 1.9, -6.2925, 106.7925, _JS, "Cilandak"),
                ("Cipete Raya", 3.3, -6.2784, 106.7975, _JS, "Cilandak"),
                ("Haji Nawi", 4.4, -6.2667, 106.7973, _JS, "Cilandak"),
                ("Blok A", 5.4, -6.2557, 106.7971, _JS, "Kebayoran Baru"),
                ("Blok M", 6.6, -6.2444, 106.7982, _JS, "Kebayoran Baru"),
                ("ASEAN", 7.5, -6.2385, 106.7985, _JS, "Kebayoran Baru"),
                ("Senayan", 8.6, -6.2268, 106.8025, _JS, "Kebayoran Baru"),
                ("Istora", 9.5, -6.2223, 106.8084, _JP, "Tanah Abang"),
                ("Bendungan Hilir", 10.8, -6.2149, 106.8179, _JP, "Tanah Abang"),
                ("Setiabudi", 11.8, -6.2091, 106.8215, _JS, "Setiabudi"),
                ("Dukuh Atas", 13.1, -6.2008, 106.8227, _JS, "Setiabudi"),
                ("Bundaran HI", 14.3, -6.1918, 106.8229, _JP, "Menteng"),
            ],
        ),
        _line(
            "TJ",
            "Koridor 1",
            [
                ("Blok M", 0.0, -6.2436, 106.8008, _JS, "Kebayoran Baru"),
                ("Masjid Agung", 1.3, -6.2354, 106.7998, _JS, "Kebayoran Baru"),
                ("Bundaran Senayan", 2.5, -6.2274, 106.8016, _JS, "Kebayoran Baru"),
                ("GBK", 3.3, -6.2235, 106.8062, _JP, "Tanah Abang"),
                ("Polda Metro Jaya", 4.1, -6.2220, 106.8105, _JS, "Kebayoran Baru"),
                ("Dukuh Atas", 6.3, -6.2035, 106.8228, _JS, "Setiabudi"),
                ("Bundaran HI", 7.4, -6.1946, 106.8230, _JP, "Menteng"),
                ("Sarinah", 8.1, -6.1877, 106.8235, _JP, "Menteng"),
                ("Bank Indonesia", 8.9, -6.1822, 106.8228, _JP, "Gambir"),
                ("Monas", 9.6, -6.1765, 106.8225, _JP, "Gambir"),
                ("Harmoni", 10.8, -6.1659, 106.8197, _JP, "Gambir"),
                ("Kota", 13.4, -6.1375, 106.8135, _JB, "Taman Sari"),
            ],
        ),
        _line(
            "KRL",
            "Bogor Line",
            [
                ("Jakarta Kota", 0.0, -6.1376, 106.8146, _JB, "Taman Sari"),
                ("Juanda", 3.6, -6.1667, 106.8304, _JP, "Gambir"),
                ("Gondangdia", 5.7, -6.1860, 106.8325, _JP, "Menteng"),
                ("Cikini", 6.6, -6.1984, 106.8410, _JP, "Menteng"),
                ("Manggarai", 8.6, -6.2099, 106.8502, _JS, "Tebet"),
                ("Tebet", 10.0, -6.2261, 106.8583, _JS, "Tebet"),
                ("Cawang", 11.6, -6.2425, 106.8588, _JT, "Kramat Jati"),
                ("Duren Kalibata", 13.2, -6.2553, 106.8550, _JS, "Pancoran"),
                ("Pasar Minggu", 16.5, -6.2843, 106.8446, _JS, "Pasar Minggu"),
                ("Lenteng Agung", 20.7, -6.3306, 106.8349, _JS, "Jagakarsa"),
                ("Universitas Pancasila", 21.8, -6.3389, 106.8344, _JS, "Jagakarsa"),
                ("Depok", 29.9, -6.4048, 106.8172, "Depok", OUTSIDE_DKI),
                ("Bogor", 54.8, -6.5955, 106.7906, "Bogor", OUTSIDE_DKI),
            ],
        ),
        _line(
            "LRT",
            "Velodrome - Pegangsaan Dua",
            [
                ("Pegangsaan Dua", 0.0, -6.1568, 106.9083, _JU, "Kelapa Gading"),
                ("Boulevard Utara", 1.1, -6.1538, 106.8988, _JU, "Kelapa Gading"),
                ("Boulevard Selatan", 2.1, -6.1620, 106.9010, _JU, "Kelapa Gading"),
                ("Pulomas", 3.5, -6.1801, 106.8923, _JT, "Pulo Gadung"),
                ("Equestrian", 4.6, -6.1865, 106.8920, _JT, "Pulo Gadung"),
                ("Velodrome", 5.8, -6.1922, 106.8905, _JT, "Pulo Gadung"),
            ],
        ),
    )
)

# Merchant category groups (ISO 18245 MCC ranges), in publication order. Each MCC falls in
# the first group whose range holds it; the rest go to OTHER.
MCC_GROUPS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("Transport and tolls", ((4000, 4799),)),
    ("Telecom and utilities", ((4800, 4999),)),
    ("Groceries and convenience", ((5411, 5411), (5412, 5499))),
    ("Department and general retail", ((5200, 5399), (5600, 5699), (5900, 5911), (5913, 5999))),
    ("Fuel and automotive", ((5500, 5599), (7500, 7549))),
    ("Restaurants and fast food", ((5811, 5814),)),
    ("Health and pharmacy", ((5912, 5912), (8000, 8099))),
    ("Recreation and cinema", ((7800, 7999),)),
    ("Government services", ((9000, 9999),)),
)


def mcc_group_keys() -> tuple[str, ...]:
    return (*(name for name, _ in MCC_GROUPS), OTHER, UNKNOWN)


def mcc_group_of(mcc: int | None) -> str:
    """The group an MCC belongs to (UNKNOWN for a missing MCC)."""
    if mcc is None:
        return UNKNOWN
    for name, ranges in MCC_GROUPS:
        if any(lo <= mcc <= hi for lo, hi in ranges):
            return name
    return OTHER
