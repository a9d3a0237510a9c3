"""The sensor catalogue: every kind of sensor the simulator knows, with its numbers.

Owns, per kind: the unit string sent on the wire, the physical (instrument) range, the normal
baseline, the measurement noise (1 sigma), the sampling period, and how the value wanders
(an AR(1) excursion and a slow drift). Numbers come from DOMAIN.md §2 and carry its source tag
in a comment: [S: ...] a published source, [A] an engineering assumption a plant engineer may
change. Where DOMAIN.md gives a band, `baseline` is inside it and `spread` keeps each sensor's
own centre inside it too.

Pure data: no I/O, no clock, no random. It must not know about sites, gateways or MQTT.
"""

# Source tags and bands are quoted as DOMAIN.md writes them, en dashes and minus signs included.
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of sensor and the statistics of its normal signal."""

    name: str
    unit: str
    min_value: float  # physical range: the instrument cannot read outside it
    max_value: float
    baseline: float  # typical value in normal operation
    spread: float  # each sensor's own centre lies in baseline +/- spread
    noise_sd: float  # white measurement noise, 1 sigma, in `unit`
    period_s: int  # sampling period
    wander_sd: float  # stationary 1 sigma of the AR(1) process excursion, in `unit`
    wander_tau_s: float  # correlation time of that excursion
    drift_amp: float  # amplitude of the slow (hours) drift, in `unit`
    source: str  # source tag as DOMAIN.md §2 gives it
    description: str


_THERMOCOUPLE_RANGE_C: Final = (-50.0, 1800.0)  # type K/N/R thermocouple span [A]
_WATER_TEMP_RANGE_C: Final = (-10.0, 150.0)  # RTD in a pressurised water line [A]
_GAS_RANGE_PPM: Final = (0.0, 2000.0)  # electrochemical cell, generous span [A]

KINDS: Final[Mapping[str, Kind]] = {
    k.name: k
    for k in (
        # 30–80 MW running, ~0 off [S: Hatch, 75–85 MW large FeNi]; noise 0.5 % [A]; 1 s
        Kind(
            name="furnace_power",
            unit="MW",
            min_value=-1.0,
            max_value=150.0,
            baseline=60.0,
            spread=10.0,
            noise_sd=0.3,
            period_s=1,
            wander_sd=2.0,
            wander_tau_s=300.0,
            drift_amp=3.0,
            source="[S: Hatch, 75–85 MW large FeNi]; noise [A]",
            description="active power drawn by the furnace",
        ),
        # 30–70 kA [A]; noise 1 % [A]; 1 s; per phase
        Kind(
            name="electrode_current",
            unit="kA",
            min_value=0.0,
            max_value=150.0,
            baseline=50.0,
            spread=3.0,
            noise_sd=0.5,
            period_s=1,
            wander_sd=0.5,
            wander_tau_s=60.0,
            drift_amp=0.0,
            source="[A]",
            description="electrode current of one phase",
        ),
        # −20 … −5 Pa gauge [A]; "slightly negative" where CO is present [S: US DOE]; 2 Pa [A]
        Kind(
            name="freeboard_pressure",
            unit="Pa",
            min_value=-2000.0,
            max_value=2000.0,
            baseline=-12.5,
            spread=2.5,
            noise_sd=2.0,
            period_s=1,
            wander_sd=1.5,
            wander_tau_s=30.0,
            drift_amp=0.5,
            source="[A]; slightly negative [S: US DOE]",
            description="freeboard (roof) pressure, gauge",
        ),
        # 60–90 vol-% closed furnace [S: gas-cleaning vendor data]; noise 1 [A]; 5 s
        Kind(
            name="offgas_co",
            unit="vol-%",
            min_value=0.0,
            max_value=100.0,
            baseline=75.0,
            spread=5.0,
            noise_sd=1.0,
            period_s=5,
            wander_sd=2.0,
            wander_tau_s=600.0,
            drift_amp=2.0,
            source="[S: gas-cleaning vendor data]; noise [A]",
            description="CO in the furnace off-gas",
        ),
        # 5–40 vol-% by charge moisture [S]; noise 0.5 [A]; 5 s
        Kind(
            name="offgas_h2",
            unit="vol-%",
            min_value=0.0,
            max_value=100.0,
            baseline=15.0,
            spread=5.0,
            noise_sd=0.5,
            period_s=5,
            wander_sd=0.6,
            wander_tau_s=900.0,
            drift_amp=1.5,
            source="[S]; noise [A]",
            description="H2 in the furnace off-gas",
        ),
        # 300–700 °C at roof duct [A]; noise 5 [A]; 5 s
        Kind(
            name="offgas_temp",
            unit="°C",
            min_value=_THERMOCOUPLE_RANGE_C[0],
            max_value=_THERMOCOUPLE_RANGE_C[1],
            baseline=500.0,
            spread=50.0,
            noise_sd=5.0,
            period_s=5,
            wander_sd=10.0,
            wander_tau_s=300.0,
            drift_amp=10.0,
            source="[A]",
            description="off-gas temperature at the roof duct",
        ),
        # 100–400 °C [A]; noise 1 [A]; 10 s; slow trends over days
        Kind(
            name="hearth_tc",
            unit="°C",
            min_value=_THERMOCOUPLE_RANGE_C[0],
            max_value=_THERMOCOUPLE_RANGE_C[1],
            baseline=250.0,
            spread=100.0,
            noise_sd=1.0,
            period_s=10,
            wander_sd=3.0,
            wander_tau_s=3600.0,
            drift_amp=8.0,
            source="[A]",
            description="hearth thermocouple",
        ),
        # 150–450 °C [A]; noise 1 [A]; 10 s; slow trends over days
        Kind(
            name="sidewall_tc",
            unit="°C",
            min_value=_THERMOCOUPLE_RANGE_C[0],
            max_value=_THERMOCOUPLE_RANGE_C[1],
            baseline=300.0,
            spread=100.0,
            noise_sd=1.0,
            period_s=10,
            wander_sd=3.0,
            wander_tau_s=3600.0,
            drift_amp=8.0,
            source="[A]",
            description="sidewall thermocouple",
        ),
        # 60–250 °C [A]; noise 2 [A]; 10 s
        Kind(
            name="shell_temp",
            unit="°C",
            min_value=_THERMOCOUPLE_RANGE_C[0],
            max_value=_THERMOCOUPLE_RANGE_C[1],
            baseline=150.0,
            spread=60.0,
            noise_sd=2.0,
            period_s=10,
            wander_sd=3.0,
            wander_tau_s=1800.0,
            drift_amp=5.0,
            source="[A]",
            description="furnace shell temperature",
        ),
        # 30–35 °C supply [A]; noise 0.2 [A]; 1 s
        Kind(
            name="cw_supply_temp",
            unit="°C",
            min_value=_WATER_TEMP_RANGE_C[0],
            max_value=_WATER_TEMP_RANGE_C[1],
            baseline=32.5,
            spread=1.0,
            noise_sd=0.2,
            period_s=1,
            wander_sd=0.3,
            wander_tau_s=900.0,
            drift_amp=0.8,
            source="[A]",
            description="cooling-water supply temperature of one panel",
        ),
        # return = supply + 3…8 °C [A]; noise 0.2 [A]; 1 s. Standalone numbers; the plant
        # model derives a panel's return from its supply plus the panel's own ΔT.
        Kind(
            name="cw_return_temp",
            unit="°C",
            min_value=_WATER_TEMP_RANGE_C[0],
            max_value=_WATER_TEMP_RANGE_C[1],
            baseline=38.0,
            spread=1.5,
            noise_sd=0.2,
            period_s=1,
            wander_sd=0.5,
            wander_tau_s=900.0,
            drift_amp=0.8,
            source="[A]",
            description="cooling-water return temperature of one panel",
        ),
        # design ±5 % [A]; noise 0.5 % [A]; 1 s. Design flow 60 m³/h per panel [A].
        Kind(
            name="cw_supply_flow",
            unit="m3/h",
            min_value=0.0,
            max_value=500.0,
            baseline=60.0,
            spread=15.0,
            noise_sd=0.3,
            period_s=1,
            wander_sd=0.8,
            wander_tau_s=120.0,
            drift_amp=0.5,
            source="[A]",
            description="cooling-water supply flow of one panel",
        ),
        # design ±5 % [A]; noise 0.5 % [A]; 1 s; imbalance ⇒ leak [S: Emerson]
        Kind(
            name="cw_return_flow",
            unit="m3/h",
            min_value=0.0,
            max_value=500.0,
            baseline=60.0,
            spread=15.0,
            noise_sd=0.3,
            period_s=1,
            wander_sd=0.8,
            wander_tau_s=120.0,
            drift_amp=0.5,
            source="[A]; imbalance ⇒ leak [S: Emerson]",
            description="cooling-water return flow of one panel",
        ),
        # 3–6 bar(g) [A]; noise 0.02 [A]; 1 s
        Kind(
            name="cw_header_pressure",
            unit="bar",
            min_value=-1.0,
            max_value=25.0,
            baseline=4.5,
            spread=0.5,
            noise_sd=0.02,
            period_s=1,
            wander_sd=0.08,
            wander_tau_s=120.0,
            drift_amp=0.1,
            source="[A]",
            description="cooling-water header pressure, gauge",
        ),
        # on/off as 1/0; pump trip [S: Port Talbot]; 1 s
        Kind(
            name="cw_pump_state",
            unit="state",
            min_value=0.0,
            max_value=1.0,
            baseline=1.0,
            spread=0.0,
            noise_sd=0.0,
            period_s=1,
            wander_sd=0.0,
            wander_tau_s=1.0,
            drift_amp=0.0,
            source="[A]; pump trip [S: Port Talbot]",
            description="cooling-water pump running (1) or stopped (0)",
        ),
        # 10–16 bar(g) [A]; noise 0.05 [A]; 1 s
        Kind(
            name="o2_line_pressure",
            unit="bar",
            min_value=-1.0,
            max_value=40.0,
            baseline=13.0,
            spread=1.0,
            noise_sd=0.05,
            period_s=1,
            wander_sd=0.2,
            wander_tau_s=300.0,
            drift_amp=0.3,
            source="[A]",
            description="oxygen line pressure, gauge",
        ),
        # work-area CO 0–15 ppm [A]; noise ~3 % [A] (of the band top); 2–5 s
        Kind(
            name="area_co",
            unit="ppm",
            min_value=_GAS_RANGE_PPM[0],
            max_value=_GAS_RANGE_PPM[1],
            baseline=4.0,
            spread=2.0,
            noise_sd=0.45,
            period_s=2,
            wander_sd=1.0,
            wander_tau_s=120.0,
            drift_amp=0.5,
            source="[A]",
            description="CO in the work area",
        ),
        # work-area H2S 0–0.5 ppm [A]; noise ~3 % [A]; 2–5 s
        Kind(
            name="area_h2s",
            unit="ppm",
            min_value=_GAS_RANGE_PPM[0],
            max_value=_GAS_RANGE_PPM[1],
            baseline=0.15,
            spread=0.05,
            noise_sd=0.015,
            period_s=5,
            wander_sd=0.03,
            wander_tau_s=300.0,
            drift_amp=0.02,
            source="[A]",
            description="H2S in the work area",
        ),
        # work-area SO2 0–0.5 ppm [A]; kept near 0.06 so a normal 15-min mean stays under the
        # 0.25 ppm PSD [A: a plant over its PSD every day is not "normal"]; noise ~3 % [A]
        Kind(
            name="area_so2",
            unit="ppm",
            min_value=_GAS_RANGE_PPM[0],
            max_value=_GAS_RANGE_PPM[1],
            baseline=0.06,
            spread=0.02,
            noise_sd=0.015,
            period_s=5,
            wander_sd=0.015,
            wander_tau_s=300.0,
            drift_amp=0.02,
            source="[A]",
            description="SO2 in the work area",
        ),
        # work-area NO2 0–0.2 ppm [A]; noise ~3 % [A]; 2–5 s
        Kind(
            name="area_no2",
            unit="ppm",
            min_value=_GAS_RANGE_PPM[0],
            max_value=_GAS_RANGE_PPM[1],
            baseline=0.06,
            spread=0.02,
            noise_sd=0.006,
            period_s=5,
            wander_sd=0.01,
            wander_tau_s=300.0,
            drift_amp=0.01,
            source="[A]",
            description="NO2 in the work area",
        ),
        # work-area O2 20.7–21.0 vol-% [S: air 20.9]; noise 0.1 [A]; 2–5 s
        Kind(
            name="area_o2",
            unit="vol-%",
            min_value=0.0,
            max_value=30.0,
            baseline=20.85,
            spread=0.1,
            noise_sd=0.1,
            period_s=2,
            wander_sd=0.03,
            wander_tau_s=300.0,
            drift_amp=0.02,
            source="[S: air 20.9]; noise [A]",
            description="O2 in the work area",
        ),
        # flammable gas 0–2 %LEL [A]; noise 1 [A]; 2–5 s; acetylene, CO, H2
        Kind(
            name="area_lel",
            unit="%LEL",
            min_value=0.0,
            max_value=100.0,
            baseline=1.0,
            spread=0.5,
            noise_sd=1.0,
            period_s=2,
            wander_sd=0.3,
            wander_tau_s=120.0,
            drift_amp=0.2,
            source="[A]",
            description="flammable gas in the work area (acetylene, CO, H2)",
        ),
    )
}

#: Work-area gas short names, as a fleet file lists them, to their kinds.
AREA_GASES: Final[Mapping[str, str]] = {
    "co": "area_co",
    "h2s": "area_h2s",
    "so2": "area_so2",
    "no2": "area_no2",
    "o2": "area_o2",
    "lel": "area_lel",
}


def kind(name: str) -> Kind:
    """Return the catalogue entry for a kind; raise KeyError naming the unknown kind."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown sensor kind {name!r}; known: {', '.join(sorted(KINDS))}") from None
