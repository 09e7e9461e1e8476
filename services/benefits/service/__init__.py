"""The benefits service's use cases: each takes a unit of work and never commits it."""

from services.benefits.service.context import (
    Context,
    DecisionNotFound,
    Engine,
    HouseholdNotKnown,
    PurposeRequired,
    RegionNotAllowed,
    ScopeRequired,
    UnknownParameter,
    card_body,
    check_region,
)
from services.benefits.service.decisions import (
    Filed,
    compute,
    decide_household,
    eligibility_of,
    fetch_household,
    fetch_households,
    get_decision,
    hold,
    hold_and_decide,
    put_household,
    rederive,
    stored_inputs,
)
from services.benefits.service.exits import exit_of, record_income
from services.benefits.service.ledger import duplicates, post_payment
from services.benefits.service.parameters import (
    add_parameter,
    parameter_history,
    recompute,
    resolved_parameters,
)
from services.benefits.service.whatif import what_if

__all__ = [
    "Context",
    "DecisionNotFound",
    "Engine",
    "Filed",
    "HouseholdNotKnown",
    "PurposeRequired",
    "RegionNotAllowed",
    "ScopeRequired",
    "UnknownParameter",
    "add_parameter",
    "card_body",
    "check_region",
    "compute",
    "decide_household",
    "duplicates",
    "eligibility_of",
    "exit_of",
    "fetch_household",
    "fetch_households",
    "get_decision",
    "hold",
    "hold_and_decide",
    "parameter_history",
    "post_payment",
    "put_household",
    "recompute",
    "record_income",
    "rederive",
    "resolved_parameters",
    "stored_inputs",
    "what_if",
]
