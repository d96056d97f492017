//! Amounts of money as integers of a currency's minor unit (cents, yen), read from and
//! written as the decimals people and manifests use. No floating point anywhere.

/// Digits after the point of an ISO 4217 currency (2 unless ISO says otherwise).
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// Why a decimal is not an amount.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("{0:?} is not a decimal number such as \"60.00\"")]
    NotDecimal(String),
    #[error("{value:?} has more digits after the point than {currency} has ({digits})")]
    TooPrecise {
        value: String,
        currency: String,
        digits: u32,
    },
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// `"60.5"` in EUR is 6050 (cents).
pub fn parse_amount(value: &str, currency: &str) -> Result<i64, AmountError> {
    let digits = minor_digits(currency);
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let decimal = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !decimal(whole) || !decimal(fraction) || (value.contains('.') && fraction.is_empty()) {
        return Err(AmountError::NotDecimal(value.into()));
    }
    if fraction.len() as u32 > digits {
        return Err(AmountError::TooPrecise {
            value: value.into(),
            currency: currency.into(),
            digits,
        });
    }
    let padded = format!("{whole}{fraction:0<width$}", width = digits as usize);
    padded.parse().map_err(|_| AmountError::TooLarge(value.into()))
}

/// A rate such as `"0.19"` in millionths (190000).
pub fn parse_rate(value: &str) -> Result<i64, AmountError> {
    let not = || AmountError::NotDecimal(value.into());
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if whole != "0" || fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not());
    }
    Ok(format!("{fraction:0<6}").parse().unwrap_or(0))
}

/// The tax on `net` (minor units) at `rate_micros`, rounded half away from zero to the
/// minor unit.
pub fn tax(net: i64, rate_micros: i64) -> i64 {
    let exact = i128::from(net) * i128::from(rate_micros);
    let rounded = (exact.abs() + 500_000) / 1_000_000;
    (rounded as i64) * net.signum()
}

/// 6050 with 2 digits is `"60.50"`.
pub fn format_amount(minor: i64, digits: u32) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10i64.pow(digits);
    let sign = if minor < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0width$}",
        minor.abs() / scale,
        minor.abs() % scale,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_and_print_in_minor_units() {
        assert_eq!(parse_amount("60.5", "EUR"), Ok(6050));
        assert_eq!(parse_amount("60", "EUR"), Ok(6000));
        assert_eq!(parse_amount("8000", "JPY"), Ok(8000));
        assert_eq!(parse_amount("1.250", "KWD"), Ok(1250));
        assert!(matches!(
            parse_amount("80.5", "JPY"),
            Err(AmountError::TooPrecise { digits: 0, .. })
        ));
        for bad in ["", ".5", "5.", "-1", "1e3", "12,50", "1.2.3"] {
            assert!(
                matches!(parse_amount(bad, "EUR"), Err(AmountError::NotDecimal(_))),
                "{bad}"
            );
        }
        assert_eq!(format_amount(6050, 2), "60.50");
        assert_eq!(format_amount(-1140, 2), "-11.40");
        assert_eq!(format_amount(8000, 0), "8000");
        assert_eq!(format_amount(5, 3), "0.005");
    }

    #[test]
    fn tax_rounds_half_away_from_zero() {
        assert_eq!(parse_rate("0.19"), Ok(190_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("0.077"), Ok(77_000));
        assert!(parse_rate("1.5").is_err() && parse_rate("0.1234567").is_err());
        assert_eq!(tax(6000, 190_000), 1140);
        // 0.5 cent goes up, and down for a credit.
        assert_eq!(tax(50, 10_000), 1);
        assert_eq!(tax(-50, 10_000), -1);
        assert_eq!(tax(8000, 100_000), 800);
    }
}
