"""The low-data benchmark's bookkeeping (seen / unseen digits, the unseen-digit table), on a synthetic result."""

from c2d.benchmarks.low_data import N_DIGITS, markdown, seen_digits, summarise, unseen_table


def per_digit(acc: dict[int, float]) -> dict:
    """100 samples a digit; those not labelled the digit asked for are labelled 4."""

    def predicted(d, a):
        counts = [0] * N_DIGITS
        counts[d] += round(100 * a)
        counts[4] += 100 - round(100 * a)
        return counts

    return {str(d): {"accuracy": acc.get(d, 0.5), "fid": 10.0 + d, "predicted": predicted(d, acc.get(d, 0.5))} for d in range(N_DIGITS)}


def subnet(subset, accs: dict[str, dict[int, float]]) -> dict:
    seen = seen_digits(subset)
    gammas = {g: {"per_digit": per_digit(a), "summary": summarise(per_digit(a), seen)} for g, a in accs.items()}
    return {"checkpoint": "x.pt", "seen": seen, "subset": subset, "trained_on": "t", "gammas": gammas}


def result() -> dict:
    return {
        "cpu": "cpu",
        "count": 100,
        "seed": 0,
        "gammas": [0.0, 3.0, 10.0],
        "sampler": "ancestral 8",
        "subnets": {
            "full data": subnet(None, {"0": {}, "3": {4: 0.9}, "10": {4: 0.7}}),
            "digit 4": subnet({"digits": [4]}, {"0": {0: 0.0}, "3": {0: 0.2}, "10": {0: 0.6}}),
        },
    }


def test_seen_digits_come_from_the_recorded_subset():
    assert seen_digits(None) == list(range(10))
    assert seen_digits({"digits": None, "fraction": 0.03}) == list(range(10))
    assert seen_digits({"digits": [3, 5, 7]}) == [3, 5, 7]


def test_summary_averages_seen_and_unseen_apart():
    s = summarise(per_digit({4: 1.0}), [4])
    assert s["accuracy_seen"] == 1.0 and abs(s["accuracy_unseen"] - 0.5) < 1e-12
    assert summarise(per_digit({}), list(range(10)))["accuracy_unseen"] is None


def test_unseen_table_names_the_best_gamma_and_the_reference_at_it():
    rows = unseen_table(result())
    digit0 = next(r for r in rows if r.startswith("| digit 4 | 0 |"))
    assert digit0 == "| digit 4 | 0 | 0.0 % | 20.0 % | 60.0 % | 10 | 50.0 % |"
    assert len([r for r in rows if r.startswith("| digit 4 |")]) == 9  # every digit but 4
    assert not any(r.startswith("| full data |") for r in rows)  # the reference saw every digit
    assert "best gamma" in markdown(result())
    # gamma 0 of the digit-4 subnet: asked for 0, all 100 labelled 4; asked for 4, all 100; the 8 others, 50 each
    assert rows[-1] == "- digit 4: at gamma 0, 60.0 % of all samples are labelled one of its training digits (4)"
