# publish_plant.jq -- plants a distinctive value ("PLANT-...") in every free-text and identifying field of a
# sample referral, and lets every group be published, for publish_test: none of them may reach any output.
def each(f): (. // []) | map(f);
.narrative = "PLANT-narrative"
| .incident.address = "PLANT-address"
| .incident.summary = "PLANT-summary"
| .reportingOfficers |= each(.name = "PLANT-officer-name" | .unit = "PLANT-unit")
| .federalAgents |= each(.name = "PLANT-agent-name" | .badgeNumber = "PLANT-badge" | .description = "PLANT-agent-description"
    | .agencyOther = (if .agency == "FEDERAL_AGENCY_OTHER_FEDERAL" then "PLANT-agency-other" else .agencyOther end)
    | (if .credentialCheck then .credentialCheck.notes = "PLANT-credential-notes" else . end))
| .civilians |= each(.name = "PLANT-civilian-name" | .contact = "PLANT-contact"
    | .injuries |= each(.description = "PLANT-injury"))
| (if .medical then .medical.emsUnit = "PLANT-ems-unit" | .medical.transportedTo = "PLANT-hospital"
    | .medical.aid |= each(.description = "PLANT-aid") else . end)
| .evidence |= each(.description = "PLANT-evidence" | .storageLocator = "PLANT-locator"
    | (if .bodyCamera then .bodyCamera.cameraId = "PLANT-camera" else . end))
| .suggestedCharges |= each(.description = "PLANT-charge")
| (if .approval then .approval.name = "PLANT-approver" else . end)
| (if .withdrawalReason then .withdrawalReason = "PLANT-withdrawal" else . end)
| .publication = {timePlace: "PUBLICATION_CLASS_DEIDENTIFIED", agencies: "PUBLICATION_CLASS_DEIDENTIFIED",
    injuries: "PUBLICATION_CLASS_DEIDENTIFIED", credentials: "PUBLICATION_CLASS_DEIDENTIFIED",
    evidence: "PUBLICATION_CLASS_DEIDENTIFIED", charges: "PUBLICATION_CLASS_DEIDENTIFIED",
    outcome: "PUBLICATION_CLASS_DEIDENTIFIED"}
