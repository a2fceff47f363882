"""Widget groups from Param specs (app_pages/ui.py): one control per spec, each refusal under its
control, and a config's ParamError under the widget its field names."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import shown


def _params_script() -> None:
    import streamlit as st

    from app_pages.ui import param_controls
    from dgs_core.params import Param

    specs = [
        Param("lr", 0.1, low=0.0, high=1.0, log=True, help="learning rate"),
        Param("steps", 10, low=1, high=100, integer=True),
        Param("mode", "min", choices=("min", "max")),
        Param("nesterov", False),
        Param("milestones", (3, 6), low=1, high=100, step_list=True),
        Param("seed", 0, integer=True),
    ]
    chosen, errors = param_controls(specs, key="t", values={"steps": 20}, hidden=("seed",))
    st.session_state["chosen"], st.session_state["errors"] = chosen, errors


def _slots_script() -> None:
    import streamlit as st

    from app_pages.ui import FieldSlots
    from dgs_core.params import Param

    slots = FieldSlots()
    a = st.number_input("a", value=1, key="a")
    slots.add("a")
    b = st.number_input("b", value=1, key="b")
    slots.add("b", "b_total")
    try:
        Param("a", 1, low=0, integer=True).validate(a)
        if a > 5:
            raise ValueError("Invalid a: no field attached")
        Param("b", 1, low=0, high=3 - a, integer=True).validate(b)  # a rule across fields
    except ValueError as exc:
        if not slots.show(exc):
            st.error(f"elsewhere: {exc}")


def _order(at: AppTest) -> list[str]:
    """The main block's elements in order: a widget by its key, anything else by its type."""
    out = []
    for node in at.main.children.values():
        key = getattr(node, "key", None)
        out.append(key if key else node.type)
        if node.type == "error":
            out[-1] = f"error: {shown(node.value)}"
    return out


def test_param_controls_draw_every_kind_and_start_from_the_values():
    at = AppTest.from_function(_params_script, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.number_input(key="t_lr").value == 0.1
    assert at.number_input(key="t_steps").value == 20  # from values, not the default
    assert at.selectbox(key="t_mode").value == "min"
    assert at.checkbox(key="t_nesterov").value is False
    assert at.text_input(key="t_milestones").value == "3, 6"
    assert "t_seed" not in [w.key for w in at.number_input]  # hidden: no control, its value kept
    assert at.session_state["chosen"] == {
        "lr": 0.1,
        "steps": 20,
        "mode": "min",
        "nesterov": False,
        "milestones": (3, 6),
        "seed": 0,
    }
    assert at.session_state["errors"] == {}
    assert "learning rate — valid: in [0, 1]" in at.number_input(key="t_lr").help


def test_param_controls_show_each_refusal_under_its_control():
    at = AppTest.from_function(_params_script, default_timeout=60).run()
    at.number_input(key="t_lr").set_value(2.0)
    at.text_input(key="t_milestones").set_value("6, 3").run()
    errors = at.session_state["errors"]
    assert errors == {
        "lr": "Invalid lr: 2.0 (must be in [0, 1])",
        "milestones": "Invalid milestones: [6, 3] "
        "(must be a strictly increasing list of integers in [1, 100])",
    }
    order = _order(at)
    assert order[order.index("t_lr") + 1] == f"error: {errors['lr']}"
    assert order[order.index("t_milestones") + 1] == f"error: {errors['milestones']}"
    at.text_input(key="t_milestones").set_value("10, ten").run()
    assert at.session_state["errors"]["milestones"] == (
        "Invalid milestones: '10, ten' (must be integers separated by commas)"
    )


def test_field_slots_put_a_param_error_under_the_widget_of_its_field():
    at = AppTest.from_function(_slots_script, default_timeout=60).run()
    assert not at.error
    at.number_input(key="a").set_value(-1).run()
    order = _order(at)
    assert order[order.index("a") + 1].startswith("error: Invalid a: -1")
    at.number_input(key="a").set_value(3).run()  # breaks b's rule: marked under b
    order = _order(at)
    assert order[order.index("b") + 1].startswith("error: Invalid b: 1")
    at.number_input(key="a").set_value(6).run()  # a plain ValueError: no field, shown elsewhere
    assert [e.value for e in at.error] == ["elsewhere: Invalid a: no field attached"]
