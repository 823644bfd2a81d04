//! Number normalisation over many countries and the ways people type numbers: each
//! row is an input, the default region it is read in, and the E.164 form or the
//! refusal reason expected.

use otpd::numbers::reader::{NumberParser, NumberRules};

/// A mobile number per country, as (region, country code, national significant
/// number). The first group of digits of each is its country's mobile range.
const MOBILES: &[(&str, &str, &str)] = &[
    ("ES", "34", "612345678"),
    ("FR", "33", "612345678"),
    ("DE", "49", "15123456789"),
    ("IT", "39", "3123456789"),
    ("PT", "351", "912345678"),
    ("GB", "44", "7400123456"),
    ("IE", "353", "850123456"),
    ("NL", "31", "612345678"),
    ("BE", "32", "470123456"),
    ("CH", "41", "781234567"),
    ("AT", "43", "6641234567"),
    ("PL", "48", "512345678"),
    ("SE", "46", "701234567"),
    ("NO", "47", "40612345"),
    ("FI", "358", "412345678"),
    ("US", "1", "2015550123"),
    ("CA", "1", "5062345678"),
    ("MX", "52", "2221234567"),
    ("BR", "55", "11961234567"),
    ("AR", "54", "91123456789"),
    ("CO", "57", "3211234567"),
    ("CL", "56", "961234567"),
    ("PE", "51", "912345678"),
    ("MA", "212", "650123456"),
    ("RO", "40", "712034567"),
    ("GR", "30", "6912345678"),
    ("CN", "86", "13123456789"),
    ("JP", "81", "9012345678"),
    ("IN", "91", "8123456789"),
    ("AU", "61", "412345678"),
    ("EC", "593", "991234567"),
    ("VE", "58", "4121234567"),
    ("AD", "376", "312345"),
    ("UA", "380", "501234567"),
    ("BG", "359", "881234567"),
    ("CZ", "420", "601123456"),
];

/// Landlines (and one toll-free number) per country: refused as `not_mobile`.
const NOT_MOBILE: &[&str] = &[
    "+34 912 345 678",
    "+34 900 123 456",
    "+33 1 23 45 67 89",
    "+49 30 123456",
    "+44 20 7123 4567",
    "+39 02 1234 5678",
    "+351 212 345 678",
    "+31 20 123 4567",
    "+32 12 34 56 78",
    "+41 21 234 56 78",
    "+43 1 234567890",
    "+48 12 345 67 89",
    "+46 8 123 456 78",
    "+358 9 1234567",
    "+52 200 123 4567",
    "+55 11 2345 6789",
    "+57 601 234 5678",
    "+212 5 2012 3456",
    "+30 21 2345 6789",
    "+81 3 1234 5678",
    "+61 2 1234 5678",
];

/// Inputs that are not numbers at all, or impossible ones.
const BROKEN: &[(&str, &str)] = &[
    ("", "empty"),
    ("   ", "empty"),
    ("+", "empty"),
    ("()- ./", "empty"),
    ("phone", "invalid_character"),
    ("+34 6l2 345 678", "invalid_character"),
    ("+34_612345678", "invalid_character"),
    ("612345678 ext 4", "invalid_character"),
    ("++34612345678", "invalid_character"),
    ("34+612345678", "invalid_character"),
    ("+34612345678\u{0}", "invalid_character"),
    ("６１２３４５６７８", "invalid_character"),
    ("+999 612 345 678", "invalid_country_code"),
    ("+0 612 345 678", "invalid_country_code"),
    ("0000612345678", "invalid_country_code"),
    ("+80 1234 5678", "invalid_country_code"),
    ("+28 1234 5678", "invalid_country_code"),
    ("12", "too_short"),
    ("+34 6", "too_short"),
    ("61234", "too_short"),
    ("+34 61234567890123", "too_long"),
    ("1234567890123456789", "too_long"),
    ("+34 412 345 678", "invalid_number"),
];

/// National forms as people in each country write them, read in that country.
const NATIONAL: &[(&str, &str, &str)] = &[
    ("ES", "612 34 56 78", "+34612345678"),
    ("FR", "06 12 34 56 78", "+33612345678"),
    ("DE", "0151 23456789", "+4915123456789"),
    ("IT", "312 345 6789", "+393123456789"),
    ("GB", "07400 123456", "+447400123456"),
    ("IE", "085 012 3456", "+353850123456"),
    ("NL", "06-12345678", "+31612345678"),
    ("BE", "0470 12 34 56", "+32470123456"),
    ("PT", "912 345 678", "+351912345678"),
    ("US", "(201) 555-0123", "+12015550123"),
    ("PL", "512 345 678", "+48512345678"),
    ("AT", "0664 1234567", "+436641234567"),
    ("CH", "078 123 45 67", "+41781234567"),
    ("SE", "070-123 45 67", "+46701234567"),
    ("AU", "0412 345 678", "+61412345678"),
];

fn parser(region: &str) -> NumberParser {
    NumberParser::new(NumberRules::new(region, true).expect(region), 0)
}

fn reason(p: &NumberParser, input: &str) -> Result<String, &'static str> {
    p.parse(input)
        .map(|n| n.e164.to_string())
        .map_err(|e| e.reason())
}

#[test]
fn table_of_numbers_across_countries() {
    let es = parser("ES");
    let mut wrong = Vec::new();
    let mut expect =
        |got: Result<String, &'static str>, want: Result<String, &'static str>, what: String| {
            if got != want {
                wrong.push(format!("{what}: got {got:?}, want {want:?}"));
            }
        };
    let mut rows = 0;
    let mut countries = std::collections::BTreeSet::new();
    for (region, cc, nsn) in MOBILES {
        let e164 = format!("+{cc}{nsn}");
        let (head, tail) = nsn.split_at(nsn.len() / 2);
        let forms = [
            e164.clone(),
            format!("+{cc} {head} {tail}"),
            format!("00{cc}{nsn}"),
            format!("00 {cc} ({head}) {tail}"),
            format!("+{cc}-{head}.{tail}"),
        ];
        for input in &forms {
            expect(
                reason(&es, input),
                Ok(e164.clone()),
                format!("{region}: {input:?}"),
            );
            rows += 1;
        }
        if let Ok(info) = es.parse(&e164) {
            let country = info.country.map(|r| r.to_string());
            expect(
                Ok(country.unwrap_or_default()),
                Ok(region.to_string()),
                format!("country of {e164}"),
            );
        }
        // Three digits of the national number, and four digits too many.
        let short = format!("+{cc}{}", &nsn[..3]);
        if !matches!(reason(&es, &short), Err("too_short" | "invalid_number")) {
            expect(reason(&es, &short), Err("too_short"), short);
        }
        let long = format!("+{cc}{nsn}9999");
        if !matches!(reason(&es, &long), Err("too_long" | "invalid_number")) {
            expect(reason(&es, &long), Err("too_long"), long);
        }
        rows += 2;
        countries.insert(*region);
    }
    for input in NOT_MOBILE {
        expect(reason(&es, input), Err("not_mobile"), format!("{input:?}"));
        rows += 1;
    }
    for (input, want) in BROKEN {
        expect(reason(&es, input), Err(*want), format!("{input:?}"));
        rows += 1;
    }
    for (region, input, want) in NATIONAL {
        expect(
            reason(&parser(region), input),
            Ok(want.to_string()),
            format!("{region}: {input:?}"),
        );
        rows += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} of {rows} rows wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(rows >= 200, "{rows} rows");
    assert!(countries.len() >= 30, "{} countries", countries.len());
}

#[test]
fn the_country_code_without_plus_is_read_as_international() {
    let es = parser("ES");
    for (input, want) in [
        ("34612345678", "+34612345678"),
        ("33612345678", "+33612345678"),
        ("447400123456", "+447400123456"),
        ("4915123456789", "+4915123456789"),
        ("351912345678", "+351912345678"),
        ("612345678", "+34612345678"),
    ] {
        assert_eq!(reason(&es, input), Ok(want.to_string()), "{input}");
    }
    // Too long to be national, starting with Spain's code: say what is wrong with it
    // as an international number.
    assert_eq!(reason(&es, "346123"), Err("too_short"));
}
