"""The agent file: the example loads, and every schema error names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents import EXAMPLE
from pipeline.agent import TRANSFER_TOOL, AgentConfig
from pipeline.agent_file import AgentFileError, load_agent_file

VALID = """\
name: Corner Bakery
greeting: Hello, Corner Bakery here.
lines:
  handoff: One moment, putting you through.
transfer:
  number: "+919000000001"
  phrases: [talk to a person]
faq:
  - topic: our hours
    keywords: [open, hours]
    answer: We bake from six to six.
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_the_example_loads_and_documents_a_real_business() -> None:
    agent = load_agent_file(EXAMPLE)
    assert agent.name == "Sunrise Dental Clinic"
    assert agent.transfer_number == "+918045678900"
    assert len(agent.faq) >= 5 and all(entry.answer for entry in agent.faq)
    assert "front desk" in agent.transfer_phrases
    topics = {entry.topic for entry in agent.faq}
    assert {"our opening hours", "our address", "our prices", "booking an appointment"} <= topics


def test_the_file_supplies_prompt_lines_and_faq_context(tmp_path: Path) -> None:
    agent = load_agent_file(write(tmp_path, VALID))
    base = AgentConfig(greeting="Hi.", system_prompt="Be brief.", goodbye_line="Bye!")
    config = agent.apply(base)
    assert config.greeting == "Hello, Corner Bakery here."
    assert config.transfer_line == "One moment, putting you through."
    assert config.transfer_number == "+919000000001" and config.tools == (TRANSFER_TOOL,)
    assert config.goodbye_line == "Bye!"  # not in the file: the environment's stays
    assert config.system_prompt.startswith("Be brief.")  # no system_prompt in the file
    assert "our hours: We bake from six to six." in config.system_prompt
    assert '"talk to a person"' in config.system_prompt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            VALID.replace("greeting:", "greting:"), "line 2: greting: unknown field", id="typo"
        ),
        pytest.param(
            VALID.replace('  number: "+919000000001"', "  number: +919000000001"),
            "line 6: transfer.number: must be text",
            id="unquoted-phone-number",
        ),
        pytest.param(
            VALID.replace('"+919000000001"', '"call the bakery"'),
            "line 6: transfer.number: not a phone number",
            id="not-a-number",
        ),
        pytest.param(
            VALID.replace("    answer: We bake from six to six.\n", ""),
            "line 9: faq[0].answer: field required",
            id="missing-answer",
        ),
        pytest.param(
            VALID.replace("    keywords: [open, hours]\n", ""),
            "line 9: faq[0]: give at least one of questions or keywords",
            id="unmatchable-entry",
        ),
        pytest.param(
            VALID.replace("faq:\n", "faq:\n  - just a string\n"),
            "line 9: faq[0]: expected fields",
            id="entry-not-a-mapping",
        ),
        pytest.param(
            VALID.replace("name: Corner Bakery\n", ""), "line 1: name: field required", id="no-name"
        ),
        pytest.param(
            VALID.replace("  handoff: One", "  handoff: [One"),
            "line 5: not valid YAML",
            id="broken-yaml",
        ),
        pytest.param("- a\n- list\n", "line 1: expected a mapping", id="not-a-mapping"),
        pytest.param(
            VALID.replace("  phrases: [talk to a person]", "  phrases: talk to a person"),
            "line 7: transfer.phrases: expected a list",
            id="phrases-not-a-list",
        ),
    ],
)
def test_schema_errors_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AgentFileError) as caught:
        load_agent_file(path)
    assert str(caught.value).startswith(f"{path} ")
    assert expected in str(caught.value)


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentFileError, match="cannot read the agent file"):
        load_agent_file(tmp_path / "missing.yaml")
