#!/usr/bin/env python3
"""Writes examples/world/: a Country manifest for every ISO 3166-1 country (249) and one
shared `local` Region per continent, for `meridian dev --manifests examples/world` and
`meridian bench world`.

How it was made (run from the repository root):

    python3 -m venv /tmp/worldvenv
    /tmp/worldvenv/bin/pip install pycountry babel pytz
    /tmp/worldvenv/bin/python tools/world_manifests.py

Sources: pycountry (ISO 3166-1 codes and names, ISO 4217 codes), babel's CLDR data (each
territory's official languages by population, its current legal tender, which locales
exist), pytz (each country's IANA zones; the main one is chosen below where a country has
several). National identifier names and patterns are listed by hand below for well-known
schemes only; countries without one carry none. retentionYears and minimumAge are platform
defaults (10 years, 16), not each country's law, except for the five countries of
examples/countries, whose values are copied from there.
"""

import datetime
import os
import sys

import babel
import babel.languages
import babel.localedata
import babel.numbers
import pycountry
import pytz

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "world")

# The main zone of countries that span several (pytz lists them in no such order).
MAIN_ZONE = {
    "AQ": "Antarctica/McMurdo", "AR": "America/Argentina/Buenos_Aires", "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo", "CA": "America/Toronto", "CD": "Africa/Kinshasa", "CL": "America/Santiago",
    "CN": "Asia/Shanghai", "DE": "Europe/Berlin", "EC": "America/Guayaquil", "ES": "Europe/Madrid",
    "FM": "Pacific/Pohnpei", "GL": "America/Nuuk", "ID": "Asia/Jakarta", "KI": "Pacific/Tarawa",
    "KZ": "Asia/Almaty", "MH": "Pacific/Majuro", "MN": "Asia/Ulaanbaatar", "MX": "America/Mexico_City",
    "MY": "Asia/Kuala_Lumpur", "NZ": "Pacific/Auckland", "PF": "Pacific/Tahiti", "PG": "Pacific/Port_Moresby",
    "PS": "Asia/Gaza", "PT": "Europe/Lisbon", "RU": "Europe/Moscow", "UA": "Europe/Kyiv",
    "UM": "Pacific/Wake", "US": "America/New_York", "UZ": "Asia/Tashkent", "CY": "Asia/Nicosia",
    # Uninhabited, and without a zone in the IANA database's zone.tab.
    "BV": "Etc/UTC", "HM": "Etc/UTC",
}

# Shared Regions, one per continent (Antarctica's few territories go with Oceania's).
REGIONS = {
    "world-africa": ("af-south-1", "Africa"),
    "world-asia": ("ap-southeast-1", "Asia"),
    "world-europe": ("eu-central-1", "Europe"),
    "world-north-america": ("us-east-1", "North America, Central America and the Caribbean"),
    "world-south-america": ("sa-east-1", "South America"),
    "world-oceania": ("ap-southeast-2", "Oceania and Antarctica"),
}

# Continents from the main zone, with the countries the zone's prefix would misplace.
CONTINENT = {
    # Atlantic and Indian Ocean zones, and a few others.
    "IS": "world-europe", "FO": "world-europe", "SJ": "world-europe", "BM": "world-north-america",
    "CV": "world-africa", "SH": "world-africa", "FK": "world-south-america", "GS": "world-south-america",
    "MG": "world-africa", "KM": "world-africa", "MU": "world-africa", "SC": "world-africa",
    "RE": "world-africa", "YT": "world-africa", "TF": "world-oceania", "MV": "world-asia",
    "IO": "world-asia", "CX": "world-oceania", "CC": "world-oceania", "HM": "world-oceania",
    "BV": "world-oceania", "AQ": "world-oceania", "CY": "world-europe", "TR": "world-europe",
    "RU": "world-europe", "GE": "world-asia", "AM": "world-asia", "AZ": "world-asia",
}
SOUTH_AMERICA = {"AR", "BO", "BR", "CL", "CO", "EC", "GF", "GY", "PE", "PY", "SR", "UY", "VE"}

# Well-known national identifier schemes (what a clinician asks a patient for). The five
# countries of examples/countries keep exactly what those manifests say.
NATIONAL_ID = {
    "AR": ("DNI", r"^[0-9]{7,8}$"),
    "AT": ("Sozialversicherungsnummer", r"^[0-9]{10}$"),
    "AU": ("Medicare number", r"^[2-6][0-9]{9}$"),
    "BE": ("Rijksregisternummer", r"^[0-9]{11}$"),
    "BG": ("EGN", r"^[0-9]{10}$"),
    "BR": ("CPF", r"^[0-9]{3}\.?[0-9]{3}\.?[0-9]{3}-?[0-9]{2}$"),
    "CA": ("Social Insurance Number", r"^[0-9]{3}[- ]?[0-9]{3}[- ]?[0-9]{3}$"),
    "CH": ("AHV-Nummer", r"^756\.?[0-9]{4}\.?[0-9]{4}\.?[0-9]{2}$"),
    "CL": ("RUN", r"^[0-9]{1,2}\.?[0-9]{3}\.?[0-9]{3}-?[0-9K]$"),
    "CN": ("Resident Identity Card number", r"^[0-9]{17}[0-9X]$"),
    "CZ": ("Rodné číslo", r"^[0-9]{6}/?[0-9]{3,4}$"),
    "DE": ("Krankenversichertennummer", r"^[A-Z][0-9]{9}$"),
    "DK": ("CPR-nummer", r"^[0-9]{6}-?[0-9]{4}$"),
    "EE": ("Isikukood", r"^[1-6][0-9]{10}$"),
    "EG": ("National ID number", r"^[23][0-9]{13}$"),
    "ES": ("DNI/NIE", r"^([0-9]{8}|[XYZ][0-9]{7})[A-Z]$"),
    "FI": ("Henkilötunnus", r"^[0-9]{6}[-+A-FU-Y][0-9]{3}[0-9A-FHJ-NPR-Y]$"),
    "FR": ("NIR", r"^[12][0-9]{2}(0[1-9]|1[0-2])(2[AB]|[0-9]{2})[0-9]{6}[0-9]{2}$"),
    "GB": ("NHS number", r"^[0-9]{3} ?[0-9]{3} ?[0-9]{4}$"),
    "GR": ("AMKA", r"^[0-9]{11}$"),
    "HK": ("HKID", r"^[A-Z]{1,2}[0-9]{6}\(?[0-9A]\)?$"),
    "HR": ("OIB", r"^[0-9]{11}$"),
    "HU": ("TAJ szám", r"^[0-9]{3} ?[0-9]{3} ?[0-9]{3}$"),
    "ID": ("NIK", r"^[0-9]{16}$"),
    "IE": ("PPS Number", r"^[0-9]{7}[A-W][A-IW]?$"),
    "IL": ("Teudat Zehut", r"^[0-9]{9}$"),
    "IN": ("Aadhaar", r"^[2-9][0-9]{3} ?[0-9]{4} ?[0-9]{4}$"),
    "IS": ("Kennitala", r"^[0-9]{6}-?[0-9]{4}$"),
    "IT": ("Codice fiscale", r"^[A-Z]{6}[0-9]{2}[A-EHLMPR-T][0-9]{2}[A-Z][0-9]{3}[A-Z]$"),
    "JP": ("My Number", r"^[0-9]{12}$"),
    "KR": ("Resident registration number", r"^[0-9]{6}-?[1-4][0-9]{6}$"),
    "LT": ("Asmens kodas", r"^[1-6][0-9]{10}$"),
    "LU": ("Matricule", r"^[0-9]{13}$"),
    "LV": ("Personas kods", r"^[0-9]{6}-?[0-9]{5}$"),
    "MX": ("CURP", r"^[A-Z]{4}[0-9]{6}[HMX][A-Z]{5}[0-9A-Z][0-9]$"),
    "MY": ("MyKad number", r"^[0-9]{6}-?[0-9]{2}-?[0-9]{4}$"),
    "NL": ("BSN", r"^[0-9]{9}$"),
    "NO": ("Fødselsnummer", r"^[0-9]{11}$"),
    "NZ": ("NHI number", r"^[A-HJ-NP-Z]{3}([0-9]{4}|[0-9]{2}[A-HJ-NP-Z]{2})$"),
    "PE": ("DNI", r"^[0-9]{8}$"),
    "PK": ("CNIC", r"^[0-9]{5}-?[0-9]{7}-?[0-9]$"),
    "PL": ("PESEL", r"^[0-9]{11}$"),
    "PT": ("Número de utente", r"^[0-9]{9}$"),
    "RO": ("CNP", r"^[1-9][0-9]{12}$"),
    "RU": ("SNILS", r"^[0-9]{3}-?[0-9]{3}-?[0-9]{3}[ -]?[0-9]{2}$"),
    "SA": ("National ID / Iqama number", r"^[12][0-9]{9}$"),
    "SE": ("Personnummer", r"^([0-9]{2})?[0-9]{6}[-+]?[0-9]{4}$"),
    "SG": ("NRIC/FIN", r"^[STFGM][0-9]{7}[A-Z]$"),
    "SI": ("EMŠO", r"^[0-9]{13}$"),
    "SK": ("Rodné číslo", r"^[0-9]{6}/?[0-9]{3,4}$"),
    "TH": ("Thai national ID number", r"^[0-9]-?[0-9]{4}-?[0-9]{5}-?[0-9]{2}-?[0-9]$"),
    "TR": ("T.C. Kimlik No", r"^[1-9][0-9]{10}$"),
    "TW": ("National ID number", r"^[A-Z][12][0-9]{8}$"),
    "US": ("Social Security Number", r"^[0-9]{3}-?[0-9]{2}-?[0-9]{4}$"),
    "ZA": ("ID number", r"^[0-9]{13}$"),
}

# Values of examples/countries (retention years, minimum age).
EXAMPLE_RULES = {"DE": (10, 16), "FR": (20, 15), "GB": (10, 16), "ES": (5, 16), "IT": (100, 14)}

# Where the name pycountry gives is the formal one, the name people use.
def display_name(c):
    return getattr(c, "common_name", None) or c.name


def main_zone(cc):
    if cc in MAIN_ZONE:
        return MAIN_ZONE[cc]
    zones = pytz.country_timezones.get(cc, [])
    if len(zones) != 1:
        sys.exit(f"{cc}: {len(zones)} zones {zones}: name its main one in MAIN_ZONE")
    return zones[0]


def continent(cc, zone):
    if cc in CONTINENT:
        return CONTINENT[cc]
    prefix = zone.split("/")[0]
    if prefix == "America":
        return "world-south-america" if cc in SOUTH_AMERICA else "world-north-america"
    region = {"Europe": "world-europe", "Africa": "world-africa", "Asia": "world-asia",
              "Australia": "world-oceania", "Pacific": "world-oceania", "Arctic": "world-europe"}.get(prefix)
    if region is None:
        sys.exit(f"{cc}: no continent for zone {zone}: add it to CONTINENT")
    return region


def languages_of(cc):
    """Official languages (de facto too), by population; scripts dropped."""
    out = []
    for lang in babel.languages.get_official_languages(cc, de_facto=True):
        code = lang.split("_")[0]
        if code not in out and 2 <= len(code) <= 3:
            out.append(code)
    return out[:4]


def locale_of(cc, languages):
    """The first language that CLDR has a locale of for this territory: `ar-EG`."""
    for lang in languages:
        try:
            loc = babel.Locale.parse(f"{lang}_{cc}")
        except (babel.UnknownLocaleError, ValueError):
            continue
        if loc.territory == cc and babel.localedata.exists(str(loc)):
            return f"{lang}-{cc}", lang
    return None, None


def currency_of(cc):
    today = datetime.date.today()
    found = babel.numbers.get_territory_currencies(cc, start_date=today, tender=True)
    for code in found:
        if pycountry.currencies.get(alpha_3=code):
            return code
    # Antarctica has no currency of its own: ISO 4217's code for "no currency".
    return "XXX"


def quote(s):
    if any(ch in s for ch in ":#'\"[]{},&*!|>%@`") or s != s.strip():
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def country_yaml(c):
    cc = c.alpha_2
    zone = main_zone(cc)
    region = continent(cc, zone)
    languages = languages_of(cc)
    locale, main = locale_of(cc, languages)
    note = ""
    if locale is None:
        # No official language with a CLDR locale for this territory (Antarctica, the
        # uninhabited islands): English as CLDR has it for the world.
        locale, main = "en-001", "en"
        note = "  # CLDR has no locale of an official language of this territory"
    if main in languages:
        languages.remove(main)
    languages.insert(0, main)
    retention, age = EXAMPLE_RULES.get(cc, (10, 16))
    lines = [
        f"# {display_name(c)} ({cc}), generated by tools/world_manifests.py.",
        "apiVersion: platform.meridian.dev/v1alpha1",
        "kind: Country",
        "metadata:",
        f"  name: {cc.lower()}",
        "spec:",
        f"  code: {cc}",
        f"  displayName: {quote(display_name(c))}",
        f"  timezone: {zone}",
        f"  locale: {locale}{note}",
    ]
    lines += [
        f"  languages: [{', '.join(languages)}]",
        f"  currency: {currency_of(cc)}",
        f"  region: {region}",
        "  residency: shared",
        "  regulatory:",
    ]
    if cc not in EXAMPLE_RULES:
        lines.append("    # Platform defaults, not this country's law: its DPO sets both before launch.")
    lines += [
        f"    retentionYears: {retention}",
        f"    minimumAge: {age}",
    ]
    if cc in NATIONAL_ID:
        name, pattern = NATIONAL_ID[cc]
        lines.append(f"    nationalIdName: {quote(name)}")
        lines.append(f"    nationalIdPattern: \"{pattern.replace(chr(92), chr(92) * 2)}\"")
    return "\n".join(lines) + "\n", region


def region_yaml(name, cloud, what):
    return (
        f"# Shared local stack for the countries of {what}.\n"
        "apiVersion: platform.meridian.dev/v1alpha1\n"
        "kind: Region\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        "  provider: local\n"
        f"  cloudRegion: {cloud}\n"
        "  isolation: shared\n"
    )


def main():
    countries = os.path.join(OUT, "countries")
    regions = os.path.join(OUT, "regions")
    os.makedirs(countries, exist_ok=True)
    os.makedirs(regions, exist_ok=True)
    for old in os.listdir(countries):
        os.remove(os.path.join(countries, old))
    count = {}
    for c in sorted(pycountry.countries, key=lambda c: c.alpha_2):
        text, region = country_yaml(c)
        count[region] = count.get(region, 0) + 1
        with open(os.path.join(countries, f"{c.alpha_2.lower()}.yaml"), "w") as f:
            f.write(text)
    for name, (cloud, what) in REGIONS.items():
        with open(os.path.join(regions, f"{name}.yaml"), "w") as f:
            f.write(region_yaml(name, cloud, what))
    print(count, sum(count.values()))


if __name__ == "__main__":
    main()
