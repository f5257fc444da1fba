"""LangChain's ChatCohere with tools and structured output (langchain-cohere pins cohere 5.x, so
the cohere5 suite runs this; elsewhere it is skipped)."""

import pytest
from pydantic import BaseModel, Field

from conftest import API_KEY, CHAT_MODEL, start_server

langchain_cohere = pytest.importorskip("langchain_cohere")


@pytest.fixture(scope="module")
def llm():
    with start_server([CHAT_MODEL], extra=("--parallel", "1", "--ctx-size", "4096")) as (url, _):
        yield langchain_cohere.ChatCohere(cohere_api_key=API_KEY, base_url=url, model=CHAT_MODEL,
                                          temperature=0, max_tokens=200)


class GetWeather(BaseModel):
    """Current weather for a city."""

    city: str = Field(description="City name")


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's full name")
    age: int = Field(description="The person's age in years")


def test_bind_tools_returns_a_tool_call(llm):
    message = llm.bind_tools([GetWeather]).invoke("What's the weather in Madrid?")
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call["name"] == "GetWeather"
    assert call["args"]["city"].lower() == "madrid"


def test_with_structured_output_returns_the_model(llm):
    person = llm.with_structured_output(Person).invoke("Maria Lopez is 34 years old and lives in Seville.")
    assert isinstance(person, Person), person
    assert person.name == "Maria Lopez" and person.age == 34


def test_with_structured_output_json_schema_mode(llm):
    person = llm.with_structured_output(Person, method="json_schema").invoke(
        "Extract the person as JSON: Tom Berg, aged 51, is an engineer.")
    assert isinstance(person, Person), person
    assert person.age == 51
