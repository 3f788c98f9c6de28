//! `openapi/ingress.yaml` stays true: every answer `POST /callback` can give is
//! documented (and nothing else is), every documented example request gets the
//! documented answer from a running ingress, and a method the document does not declare
//! for a path is answered 405 with the declared ones in `Allow`. (Generated requests,
//! valid and invalid, are checked against the document by schemathesis in
//! `tests/python/test_ingress_openapi.py`.)

mod common;

use std::collections::BTreeSet;

use actix_web::ResponseError;
use actix_web::body::MessageBody;
use callbridge_ingress::error::CallbackError;
use callbridge_ingress::publisher::PublishError;
use callbridge_types::event::ValidationError;
use callbridge_types::signature::SignatureError;
use common::*;
use serde_json::Value;

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/ingress.yaml");
    let text = std::fs::read_to_string(path).expect("openapi/ingress.yaml exists");
    serde_yaml_ng::from_str(&text).expect("openapi/ingress.yaml is valid YAML")
}

fn callback_operation(document: &Value) -> &Value {
    &document["paths"]["/callback"]["post"]
}

/// Resolves a local `$ref` (`#/components/schemas/X`).
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let path = reference.trim_start_matches("#/");
            path.split('/').fold(document, |node, key| &node[key])
        }
        None => schema,
    }
}

/// The JSON body satisfies the documented object schema's `required`, property types
/// and `additionalProperties: false`.
fn assert_matches_schema(document: &Value, schema: &Value, body: &Value, context: &str) {
    let schema = resolve(document, schema);
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{context}: body is not an object"));
    for required in schema["required"].as_array().into_iter().flatten() {
        let key = required.as_str().unwrap();
        assert!(
            object.contains_key(key),
            "{context}: documented field {key} missing from {body}"
        );
    }
    for (key, value) in object {
        let property = &schema["properties"][key];
        if schema["additionalProperties"] == Value::Bool(false) {
            assert!(
                !property.is_null(),
                "{context}: undocumented field {key} in {body}"
            );
        }
        if property["type"] == "string" {
            assert!(
                value.is_string(),
                "{context}: {key} is documented as a string"
            );
        }
        if let Some(allowed) = property["enum"].as_array() {
            assert!(
                allowed.contains(value),
                "{context}: {key}={value} not in the documented enum"
            );
        }
    }
}

/// Every documented example body of a response.
fn documented_examples(response: &Value) -> Vec<Value> {
    let content = &response["content"]["application/json"];
    let mut examples: Vec<Value> = content["examples"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, example)| example["value"].clone())
        .collect();
    if !content["example"].is_null() {
        examples.push(content["example"].clone());
    }
    examples
}

/// Each answer the callback handler can produce, as (status, body, headers).
fn every_handler_answer() -> Vec<(u16, Value, Vec<String>)> {
    let errors = [
        CallbackError::TooLarge,
        CallbackError::Unauthorized(SignatureError::Missing),
        CallbackError::Unauthorized(SignatureError::Invalid),
        CallbackError::Unauthorized(SignatureError::TimestampOutOfWindow),
        CallbackError::Invalid(ValidationError {
            field: "phone_number".to_owned(),
            reason: "longer than 20 characters".to_owned(),
        }),
        CallbackError::BodyUnreadable(actix_web::error::PayloadError::Incomplete(None)),
        CallbackError::BodyTimeout,
        CallbackError::Unavailable {
            cause: PublishError::Disconnected,
            retry_after_secs: 5,
        },
    ];
    let mut answers: Vec<(u16, Value, Vec<String>)> = errors
        .iter()
        .map(|error| {
            let response = error.error_response();
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .keys()
                .map(|name| name.as_str().to_owned())
                .collect();
            let body = response
                .into_body()
                .try_into_bytes()
                .expect("a complete body");
            (
                status,
                serde_json::from_slice(&body).expect("a JSON body"),
                headers,
            )
        })
        .collect();
    answers.push((200, serde_json::json!({"status": "success"}), Vec::new()));
    answers
}

#[test]
fn every_answer_of_the_handler_is_documented_and_nothing_else() {
    let document = document();
    let responses = &callback_operation(&document)["responses"];
    let answers = every_handler_answer();

    let documented: BTreeSet<u16> = responses
        .as_object()
        .unwrap()
        .keys()
        .map(|code| code.parse().unwrap())
        .collect();
    let produced: BTreeSet<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(documented, produced);

    for (status, body, headers) in &answers {
        let response = &responses[status.to_string()];
        let context = format!("{status} {body}");
        let schema = &response["content"]["application/json"]["schema"];
        assert_matches_schema(&document, schema, body, &context);
        if *status != 400 {
            // Fixed texts: the very body must be among the documented examples.
            assert!(
                documented_examples(response).contains(body),
                "{context}: body not among the documented examples"
            );
        }
        for header in headers.iter().filter(|h| *h != "content-type") {
            let documented_headers: Vec<String> = response["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect();
            assert!(
                documented_headers.contains(header),
                "{context}: header {header} undocumented"
            );
        }
    }
}

#[tokio::test]
async fn every_documented_example_request_gets_the_documented_answer() {
    let document = document();
    let operation = callback_operation(&document);
    let examples = operation["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .expect("the request has examples");
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;

    for (name, example) in examples {
        let body = serde_json::to_string(&example["value"]).unwrap();
        let headers = match example["x-signature"].as_str() {
            Some("valid") => vec![("X-Signature", python_hmac_hex(SECRET, body.as_bytes()))],
            Some("wrong") => vec![("X-Signature", python_hmac_hex("other", body.as_bytes()))],
            Some("missing") => vec![],
            other => panic!("example {name}: unknown x-signature {other:?}"),
        };
        let expected = example["x-expected-status"]
            .as_u64()
            .expect("x-expected-status");

        let response = app.post_callback(body, &headers).await;

        assert_eq!(
            u64::from(response.status().as_u16()),
            expected,
            "example {name}"
        );
        let answer: Value = response.json().await.unwrap();
        let documented = &operation["responses"][expected.to_string()];
        if let Some(field) = example["x-expected-detail-field"].as_str() {
            let detail = answer["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with(&format!("{field}:")),
                "example {name}: {answer}"
            );
        } else {
            assert!(
                documented_examples(documented).contains(&answer),
                "example {name}: answer {answer} is not a documented example"
            );
        }
    }
}

#[tokio::test]
async fn a_method_the_document_does_not_declare_answers_405_with_the_declared_ones_in_allow() {
    let document = document();
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let all = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"];

    for (path, operations) in document["paths"].as_object().unwrap() {
        let declared: Vec<String> = operations
            .as_object()
            .unwrap()
            .keys()
            .map(|method| method.to_ascii_uppercase())
            .collect();
        for method in all.iter().filter(|m| !declared.iter().any(|d| d == *m)) {
            let response = app
                .client
                .request(method.parse().unwrap(), format!("{}{path}", app.address))
                .send()
                .await
                .unwrap();

            assert_eq!(response.status().as_u16(), 405, "{method} {path}");
            let allow = response
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
                .to_str()
                .unwrap();
            let allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
            assert_eq!(allowed, declared, "{method} {path}: Allow {allow}");
        }
    }
}
